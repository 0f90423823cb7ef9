"""The REST API's OpenAPI schema, checked by schemathesis against a live local server
(127.0.0.1, ephemeral port): generated bodies, valid and invalid, must get documented status
codes and responses that match the schema, and never a 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from owl_core.engine.loading import load_model
from owl_core.rest import RestConfig, create_app


@pytest.fixture(scope="module")
def rest_server(tiny_model_dir) -> Iterator[str]:
    model = load_model(str(tiny_model_dir), device="cpu", dtype="fp32", compile=False)
    app = create_app(model, RestConfig())
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def rest_schema(rest_server: str):
    return schemathesis.openapi.from_url(f"{rest_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("rest_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case):
    # valid-by-schema bodies carry random text as image data, which the server rightly
    # refuses with a documented 4xx, so "positive data must be accepted" does not apply
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


def test_schema_documents_the_reference_route(rest_schema):
    raw = rest_schema.raw_schema
    body = raw["paths"]["/owlv2/infer"]["post"]["requestBody"]["content"]["application/json"]
    name = body["schema"]["$ref"].rsplit("/", 1)[1]
    fields = raw["components"]["schemas"][name]["properties"]
    for key in ("image", "training_data", "confidence", "visualize_predictions",
                "visualization_labels", "visualization_stroke_width", "api_key", "model_id",
                "owlv2_version_id"):
        assert key in fields
    assert fields["confidence"]["default"] == 0.99
    for code in ("200", "403", "413", "422", "500"):
        assert code in raw["paths"]["/owlv2/infer"]["post"]["responses"]
