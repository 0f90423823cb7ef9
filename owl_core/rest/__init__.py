"""REST API of the engine: Roboflow Inference's `POST /owlv2/infer` on the wire, plus
`POST /infer` with `.pt` prompt files. FastAPI; imported only when used (`owl_core` itself
doesn't import it).

    from owl_core.rest import RestConfig, create_app
    app = create_app(load_model(...), RestConfig(weights={"coins": "coins.pt"}))
"""

from owl_core.rest.app import RestConfig, create_app
from owl_core.rest.images import UrlPolicy
from owl_core.rest.work import WorkLimits

__all__ = ["RestConfig", "UrlPolicy", "WorkLimits", "create_app"]
