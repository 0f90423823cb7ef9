"""The REST API: `create_app(model, config)` gives a FastAPI app with

- ``POST /owlv2/infer``: Roboflow Inference's OwlV2 request and response, on the wire;
- ``POST /infer``: detect with the exemplars of a `.pt` (loaded at start by name, or uploaded);
- ``GET /weights``: the `.pt` files loaded at start;
- ``GET /docs`` (Swagger UI) and ``GET /redoc``: served with their scripts from the installed
  `fastapi-offline` package, so they work without internet (FastAPI's own load them from a CDN).

Every request runs on its own short-lived `OwlPredictor` over the one shared model, in the
light or heavy lane of a `WorkScheduler`, under a time budget. Errors: a bad body -> 422; an
`OwlError` -> 4xx with its message (403 refused image source, 413 over a limit, 503 busy,
400 otherwise); anything else -> 500 with a generic message (the traceback is logged). No
message names a path on the server.
"""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from owl_core import limits
from owl_core.engine.loading import OwlModel
from owl_core.engine.prompt_file import public_model_id
from owl_core.errors import ImageError, LimitError, OwlError, PtFormatError
from owl_core.images import decode_bytes
from owl_core.params import MAX_DETECTIONS_LIMIT, SCORE_MODES, DetectParams
from owl_core.phrases import parse_phrases
from owl_core.rest.api_key import ApiKeyMiddleware
from owl_core.rest.body_limit import BodyLimitMiddleware
from owl_core.rest.images import ImageRefusedError, Resolver, UrlPolicy, resolve_ref
from owl_core.rest.models import (
    DetectionResponse,
    ErrorResponse,
    OwlV2Request,
    WeightsInfo,
    prediction_dicts,
)
from owl_core.rest.work import BusyError, Deadline, WorkLimits, WorkScheduler, WorkSize

log = logging.getLogger("owl_core.rest")
#: Paths the body limit applies to (Gradio, when mounted, keeps its own upload limit).
REST_PATHS = ("/owlv2/", "/infer", "/weights")
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 403, 408, 413, 422, 500, 503)}
_PREDICTOR_KEYS = ("top_k", "match_threshold", "preprocessing")


@dataclass
class RestConfig:
    """Server settings.

    Attributes:
        weights: name -> `.pt` path, loaded (and validated) when the app is made.
        allow_url_images: fetch `url` images (SSRF-checked); off by default.
        url_policy: size / time / redirect bounds of those fetches.
        predictor_kwargs: `top_k`, `match_threshold` for each request's predictor (other keys,
            e.g. a disk cache, are ignored: requests never write a shared tier).
        request_cache_bytes: embedding cache of one request (private, dropped afterwards).
        work: per-request work bounds and lanes.
        resolver: DNS resolver for URL images (tests replace it).
        shared_cache: an `EmbeddingCache` shared with others (e.g. the studio's sessions) for
            the embeddings computed here from pixels. A `.pt`'s own image embeddings (a
            stranger's data) never enter it: the predictor keeps them with the file's prompts,
            for the request that brought the file only.
        api_key: when set, every REST request must carry it (`owl_core.rest.api_key`); 401
            otherwise.
    """

    weights: dict[str, str] = field(default_factory=dict)
    allow_url_images: bool = False
    url_policy: UrlPolicy | None = None
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    request_cache_bytes: int = 512 * 1024**2
    work: WorkLimits = field(default_factory=WorkLimits)
    resolver: Resolver | None = None
    shared_cache: Any = None
    api_key: str | None = None

    def policy(self) -> UrlPolicy:
        base = self.url_policy or UrlPolicy()
        return UrlPolicy(allowed=self.allow_url_images, max_bytes=base.max_bytes,
                         timeout_s=base.timeout_s, max_redirects=base.max_redirects)


@dataclass(frozen=True)
class _Weights:
    name: str
    path: Path
    class_names: tuple[str, ...]
    huggingface_id: str


class _Service:
    """What the routes call: request -> predictor -> responses, off the event loop."""

    def __init__(self, model: OwlModel, config: RestConfig) -> None:
        self.model = model
        self.config = config
        self.policy = config.policy()
        self.kwargs = {k: v for k, v in config.predictor_kwargs.items()
                       if k in _PREDICTOR_KEYS and v is not None}
        self.scheduler = WorkScheduler(config.work)
        self.weights = {name: self._load_weights(name, path)
                        for name, path in config.weights.items()}

    # -------------------------------------------------------------- helpers
    def predictor(self, *, shared: bool = False, preprocessing: str | None = None,
                  for_pt: bool = False) -> Any:
        """A predictor for one request: over the shared cache when `shared` (and one is
        configured), else over a private cache dropped with the request. `for_pt`: leave the
        preprocessing to the `.pt` loaded next unless `preprocessing` is given."""
        from owl_core.engine.predictor import OwlPredictor

        kwargs = dict(self.kwargs)
        if for_pt:
            kwargs.pop("preprocessing", None)
        if preprocessing is not None:
            kwargs["preprocessing"] = preprocessing
        if shared and self.config.shared_cache is not None:
            return OwlPredictor(self.model, cache=self.config.shared_cache, **kwargs)
        return OwlPredictor(self.model, device_cache_bytes=self.config.request_cache_bytes,
                            host_cache_bytes=self.config.request_cache_bytes, **kwargs)

    @property
    def top_k(self) -> int:
        return min(int(self.kwargs.get("top_k", 300)), self.model.grid_size ** 2)

    def _load_weights(self, name: str, path: str) -> _Weights:
        pred = self.predictor()
        with _hide_path(path, f".pt {name!r}"):
            prompts = pred.load_pt(path)
        return _Weights(name, Path(path), tuple(prompts.exemplars.class_names),
                        public_model_id(prompts.huggingface_id))  # shown by GET /weights

    def image(self, kind: str, value: str, label: str) -> bytes | np.ndarray:
        return resolve_ref(kind, value, label, self.policy, self.config.resolver)

    @staticmethod
    def check_counts(queries: int, training: int = 0) -> None:
        bound = limits.current()
        bound.check("max_images_per_request", queries, "images to detect on in one request")
        bound.check("max_training_images", training, "training images in one request")

    # -------------------------------------------------------------- /owlv2/infer
    def owlv2(self, body: OwlV2Request, start: float) -> list[dict]:
        deadline = Deadline(self.config.work.time_budget_s)
        training = []
        for i, entry in enumerate(body.training_data):
            deadline.check("reading training images")
            image = self.image(entry.image.type, entry.image.value, f"training_data[{i}].image")
            training.append({"image": image, "boxes": [
                {"x": b.x, "y": b.y, "w": b.w, "h": b.h, "cls": b.cls, "negative": b.negative}
                for b in entry.boxes]})
        queries = []
        for i, ref in enumerate(body.images()):
            deadline.check("reading images")
            queries.append(self.image(ref.type, ref.value, f"image[{i}]"))
        # class ids index the sorted class names, as the reference's responses do
        names = sorted({b["cls"] for t in training for b in t["boxes"]}
                       | {p.cls for p in parse_phrases(body.phrases)})
        pred = self.predictor(shared=True, preprocessing=body.preprocessing)
        pred.set_examples(training, class_names=names, phrases=body.phrases,
                          progress=_checker(deadline, "examples"))
        params = DetectParams(confidence=body.confidence if body.confidence is not None
                              else 0.99,
                              iou_threshold=_or(body.iou_threshold, 0.3),
                              max_detections=_or(body.max_detections, 300),
                              score_mode=_or(body.score_mode, "reference"),
                              combine=_or(body.combine, "max"))
        draw = _Drawing(bool(body.visualize_predictions), bool(body.visualization_labels),
                        _or(body.visualization_stroke_width, 1))
        return self._detect_all(pred, queries, params, draw, deadline, start,
                                body.id or str(uuid.uuid4()))

    def _detect_all(self, pred: Any, queries: list, params: DetectParams, draw: _Drawing,
                    deadline: Deadline, start: float, inference_id: str) -> list[dict]:
        out = []
        for i, image in enumerate(queries):
            deadline.check(f"image {i}")
            result = pred.detect(image, params)
            found = result.to_json()
            out.append({"inference_id": inference_id, "image": found["image"],
                        "predictions": prediction_dicts(found),
                        "visualization": draw(image, result)})
        now = time.perf_counter() - start
        for response in out:
            response["time"] = now
        return out

    # -------------------------------------------------------------- /infer
    def infer_pt(self, weights: _Weights | None, upload: bytes | None, images: list[bytes],
                 params: DetectParams, draw: _Drawing, start: float,
                 preprocessing: str | None = None) -> list[dict]:
        deadline = Deadline(self.config.work.time_budget_s)
        # the file's image embeddings stay private to this predictor (OwlPredictor.load_pt)
        pred = self.predictor(shared=True, preprocessing=preprocessing, for_pt=True)
        if weights is not None:
            with _hide_path(str(weights.path), f".pt {weights.name!r}"):
                pred.load_pt(weights.path)
        else:
            assert upload is not None
            with tempfile.TemporaryDirectory(prefix="owl-rest-") as folder:
                path = Path(folder) / "upload.pt"
                path.write_bytes(upload)
                with _hide_path(str(path), "the uploaded .pt"):
                    pred.load_pt(path)
        n = len(pred.class_names)
        self.scheduler.admit(WorkSize(len(images), n * len(images) * self.top_k))
        return self._detect_all(pred, list(images), params, draw, deadline, start,
                                str(uuid.uuid4()))


@contextmanager
def _hide_path(path: str, label: str) -> Iterator[None]:
    """Re-raise an `OwlError` whose message names `path` with `label` in its place, so no
    message shows a path on the server."""
    try:
        yield
    except OwlError as exc:
        text = str(exc)
        forms = {str(path), str(Path(path)), str(Path(path).resolve())}
        if not any(f in text for f in forms):
            raise
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, label)
        try:
            replaced = type(exc)(text)
        except TypeError:  # an error type with another constructor
            replaced = PtFormatError(text)
        raise replaced from None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _checker(deadline: Deadline, step: str) -> Callable[[int, int], None]:
    return lambda done, total: deadline.check(step)


@dataclass(frozen=True)
class _Drawing:
    """The visualization asked for: boxes (and labels) drawn with supervision, base64 JPEG."""

    enabled: bool
    labels: bool
    stroke: int

    def __call__(self, image: bytes | np.ndarray, result: Any) -> str | None:
        if not self.enabled:
            return None
        import supervision as sv
        from PIL import Image

        pixels = image if isinstance(image, np.ndarray) else decode_bytes(image)
        scene = np.ascontiguousarray(pixels[:, :, ::-1])  # supervision draws BGR arrays
        detections = result.to_supervision()
        scene = sv.BoxAnnotator(thickness=self.stroke).annotate(scene, detections)
        if self.labels:
            names = detections.data.get("class_name", [])
            text = [f"{n} {c:.2f}" for n, c in zip(names, detections.confidence, strict=True)]
            scene = sv.LabelAnnotator().annotate(scene, detections, labels=text)
        buffer = io.BytesIO()
        Image.fromarray(scene[:, :, ::-1]).save(buffer, format="JPEG", quality=90)
        return base64.b64encode(buffer.getvalue()).decode("ascii")


def _status(exc: OwlError) -> int:
    if isinstance(exc, BusyError):
        return 503
    if isinstance(exc, LimitError):
        return 413
    if isinstance(exc, ImageRefusedError):
        return 403
    return 400


def _validation_message(errors: list[dict]) -> tuple[str, list[dict]]:
    """A one-line summary and the errors without their (possibly huge) inputs."""
    detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:500],
               "type": str(e.get("type", ""))} for e in errors[:20]]
    parts = [f"{'.'.join(d['loc'][1:] if d['loc'][:1] == ['body'] else d['loc'])}: {d['msg']}"
             for d in detail[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, detail


def create_app(model: OwlModel, config: RestConfig | None = None,
               app: FastAPI | None = None) -> FastAPI:
    """The REST app over the shared `model` (or these routes added to `app`).

    Raises:
        PtFormatError: a `.pt` in `config.weights` can't be loaded (at start, not per request).
    """
    config = config or RestConfig()
    service = _Service(model, config)
    if app is None:
        # /docs and /redoc with Swagger UI / ReDoc from the package, not a CDN (offline use)
        app = FastAPIOffline(title="OWL Studio REST API", version="1",
                             description="Few-shot OWLv2 detection; `POST /owlv2/infer` takes "
                                         "Roboflow Inference's OwlV2 requests.")
    app.add_middleware(BodyLimitMiddleware, paths=REST_PATHS,
                       max_bytes=lambda: limits.current().max_request_bytes,
                       max_in_flight=config.work.max_in_flight)
    if config.api_key:  # outside the body limit: a request without the key is not read
        app.add_middleware(ApiKeyMiddleware, paths=REST_PATHS, key=config.api_key)
    app.state.owl_rest = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, detail = _validation_message(list(exc.errors()))
        return JSONResponse({"message": message, "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the request body could not be read: send UTF-8 JSON (or multipart form)."
        return JSONResponse({"message": message}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OwlError)
    async def _refused(request: Request, exc: OwlError) -> JSONResponse:
        headers = {"Retry-After": "5"} if isinstance(exc, BusyError) else None
        return JSONResponse({"message": str(exc)}, status_code=_status(exc), headers=headers)

    @app.exception_handler(Exception)
    async def _crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("REST request %s %s failed", request.method, request.url.path)
        return JSONResponse({"message": "internal error while handling the request; the "
                                        "server log has the details."}, status_code=500)

    @app.post("/owlv2/infer", response_model=DetectionResponse | list[DetectionResponse],
              responses=_ERRORS, summary="OwlV2 image prompting (Roboflow Inference compatible)",
              description="Few-shot detection from example boxes. One image gives one "
                          "response, a list of images a list of responses.")
    async def owlv2_infer(body: OwlV2Request) -> Any:
        start = time.perf_counter()
        service.check_counts(len(body.images()), len(body.training_data))
        classes = body.classes()
        limits.current().check("max_classes", len(classes), "classes in the training data")
        n = len(body.images())
        size = WorkSize(n + len(body.training_data), len(classes) * n * service.top_k)
        out = await service.scheduler.run(size, service.owlv2, body, start)
        return out if isinstance(body.image, list) else out[0]

    @app.post("/infer", response_model=list[DetectionResponse], responses=_ERRORS,
              summary="Detect with a .pt prompt file (by name or uploaded)",
              description="Give `weights` (a name from GET /weights) or upload `weights_file`, "
                          "plus one or more `images`. One response per image.")
    async def infer(
        images: Annotated[list[UploadFile], File(description="Images to detect on.")],
        weights: Annotated[str | None, Form(description="Name of a .pt loaded at start.")]
        = None,
        weights_file: Annotated[UploadFile | None, File(description="A .pt to use.")]
        = None,
        confidence: Annotated[float | None, Form(ge=0, le=1)] = None,
        iou_threshold: Annotated[float | None, Form(ge=0, le=1)] = None,
        max_detections: Annotated[int | None, Form(ge=0, le=MAX_DETECTIONS_LIMIT)] = None,
        score_mode: Annotated[str | None, Form(pattern="^(" + "|".join(SCORE_MODES) + ")$")]
        = None,
        visualize_predictions: Annotated[bool, Form()] = False,
        visualization_labels: Annotated[bool, Form()] = False,
        visualization_stroke_width: Annotated[int, Form(ge=1, le=50)] = 1,
        preprocessing: Annotated[str | None, Form(pattern="^(hf|roboflow)$",
                                                  description="Default: the .pt's own.")]
        = None,
    ) -> Any:
        start = time.perf_counter()
        service.check_counts(len(images))
        chosen = _choose_weights(service, weights, weights_file)
        bound = limits.current()
        upload = None
        if chosen is None:
            upload = await _read_upload(weights_file, bound.max_upload_bytes, "weights_file")
        data = [await _read_upload(f, bound.max_upload_bytes, f"images[{i}]")
                for i, f in enumerate(images)]
        params = DetectParams().replace(confidence=confidence, iou_threshold=iou_threshold,
                                        max_detections=max_detections, score_mode=score_mode)
        draw = _Drawing(visualize_predictions, visualization_labels, visualization_stroke_width)
        size = WorkSize(len(data), 0)
        return await service.scheduler.run(size, service.infer_pt, chosen, upload, data, params,
                                           draw, start, preprocessing)

    @app.get("/weights", response_model=list[WeightsInfo], summary="The .pt files loaded at start")
    async def list_weights() -> Any:
        return [{"name": w.name, "class_names": list(w.class_names),
                 "huggingface_id": w.huggingface_id} for w in service.weights.values()]

    return app


def _choose_weights(service: _Service, name: str | None,
                    upload: UploadFile | None) -> _Weights | None:
    if name and upload is not None:
        raise PtFormatError("give either weights (a loaded .pt's name) or weights_file (an "
                            "upload), not both.")
    if name:
        if name not in service.weights:
            known = ", ".join(sorted(service.weights)[:20]) or "none loaded"
            raise PtFormatError(f"no .pt named {name[:100]!r} on this server ({known}); start it "
                                "with --weights NAME=PATH, or upload the file as weights_file.")
        return service.weights[name]
    if upload is None:
        raise PtFormatError("no prompts: give weights (the name of a .pt loaded at start, see "
                            "GET /weights) or upload a .pt as weights_file.")
    return None


async def _read_upload(upload: UploadFile, max_bytes: int, label: str) -> bytes:
    if upload.size is not None and upload.size > max_bytes:
        raise LimitError(f"{label}: {upload.size:,} bytes is over the limit of {max_bytes:,} "
                         "(max_upload_bytes).")
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise LimitError(f"{label}: over the limit of {max_bytes:,} bytes (max_upload_bytes).")
    if not data:
        raise ImageError(f"{label}: the upload is empty.")
    return data
