"""Request and response bodies of the REST API (pydantic), shaped like Roboflow Inference's.

`OwlV2Request` mirrors the reference's `OwlV2InferenceRequest` on the wire: the same field
names and defaults, ints *and* floats for box coordinates, and the reference's bookkeeping
fields (`api_key`, `model_id`, `owlv2_version_id`, ...) accepted and ignored, as is any other
unknown field. The responses mirror its `ObjectDetectionInferenceResponse`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from owl_core.errors import TrainingDataError
from owl_core.naming import clean_class_name
from owl_core.params import COMBINE_MODES, MAX_DETECTIONS_LIMIT, SCORE_MODES
from owl_core.phrases import parse_phrases

#: A finite number (JSON has no NaN / Infinity, but Python's json module reads them).
#: Numbers and booleans are strict: ints and floats are both numbers, but `true` is not 1 and
#: "3" is not 3 (the schema says so, and a mix-up of fields should not pass silently).
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Unit = Annotated[float, Field(strict=True, ge=0.0, le=1.0, allow_inf_nan=False)]
Size = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Flag = Annotated[bool, Field(strict=True)]
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_DETECTIONS_LIMIT)]
IMAGE_TYPES = ("base64", "numpy", "url", "file")


class ImageRef(BaseModel):
    """One image: ``{"type": "base64" | "numpy" | "url" | "file", "value": ...}``.

    base64: the image file's bytes (or a ``data:image/...;base64,`` URL). numpy: base64 of a
    pickled (H, W, 3) uint8 array in BGR order, as the reference sends it (read with an
    allow-list unpickler: data only). url: refused unless the server runs with
    ``--allow-url-images``. file: always refused (the server never reads its own files).
    """

    model_config = ConfigDict(extra="ignore")

    type: Literal["base64", "numpy", "url", "file"] = Field(
        description="How `value` carries the image: base64, numpy, url or file.",
        examples=["base64"])
    value: str = Field(description="The image data (base64 text) or its URL.",
                       examples=["iVBORw0KGgo..."])


class TrainBox(BaseModel):
    """A drawn box: x, y = centre, w, h = size, in pixels of its image."""

    model_config = ConfigDict(extra="ignore")

    x: Finite = Field(description="Centre x in pixels (int or float).")
    y: Finite = Field(description="Centre y in pixels (int or float).")
    w: Size = Field(description="Width in pixels (int or float).")
    h: Size = Field(description="Height in pixels (int or float).")
    cls: str = Field(min_length=1, description="Class name of the object in the box.")
    negative: Flag = Field(False, description="True: a look-alike that must not be detected.")

    @field_validator("cls")
    @classmethod
    def _cls_bounded(cls, value: str) -> str:
        # the one class-name rule (owl_core.naming); its errors are ValueErrors -> 422
        return clean_class_name(value, "the class name", TrainingDataError)


class TrainingImage(BaseModel):
    """An example image and the boxes drawn on it (may be empty)."""

    model_config = ConfigDict(extra="ignore")

    image: ImageRef
    boxes: list[TrainBox] = Field(default_factory=list)


class OwlV2Request(BaseModel):
    """Body of ``POST /owlv2/infer`` (the reference's `OwlV2InferenceRequest`, plus our
    optional NMS / score settings)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    image: ImageRef | list[ImageRef] = Field(
        description="Image(s) to detect on; a list gives a list of responses.")
    training_data: list[TrainingImage] = Field(
        description="Example images with boxes (reference schema); `[]` with `phrases` "
                    "alone for zero-shot detection.")
    phrases: dict[str, list[str]] | None = Field(
        None, description="Extension (owl-studio; Roboflow clients never send it): text prompts "
                          "per class, {class: [phrase, ...]}, e.g. {\"coin\": [\"a coin\"]}. "
                          "A class may have phrases, boxes or both; a phrase-only class detects "
                          "zero-shot. Phrases: non-empty, printable, at most 16 tokens with "
                          "start and end (OWLv2's text tower).",
        examples=[{"coin": ["a coin"]}])
    combine: Literal[COMBINE_MODES] | None = Field(  # type: ignore[valid-type]
        None, description="Extension: how a class's phrases and boxes combine: max (a phrase "
                          "is one more example; default) or fused (one prototype per class: "
                          "normalised mean phrase + normalised mean box, Kaul et al. 2023).")
    confidence: Unit | None = Field(0.99, description="Minimum score of a detection.")
    visualize_predictions: Flag | None = Field(
        False, description="Return the image with the detections drawn, as base64 JPEG.")
    visualization_labels: Flag | None = Field(
        False, description="Draw class names and scores on the visualization.")
    visualization_stroke_width: Annotated[int, Field(strict=True, ge=1, le=50)] | None = Field(
        1, description="Box line width of the visualization, pixels.")
    iou_threshold: Unit | None = Field(0.3, description="NMS IoU threshold (ours).")
    max_detections: Count | None = Field(300, description="Most detections per image (ours).")
    score_mode: Literal[SCORE_MODES] | None = Field(  # type: ignore[valid-type]
        "reference", description="reference: (cos + 1) / 2; calibrated: the model's logit.")
    preprocessing: Literal["hf", "roboflow"] | None = Field(
        None, description="Image preprocessing: hf (current transformers) or roboflow (Roboflow "
                          "Inference's own: the same detections as it gives); default: the "
                          "server's (hf unless started with --preprocessing).")
    # the reference's bookkeeping fields: accepted, ignored
    id: str | None = Field(None, max_length=200,
                              description="Request id, echoed as inference_id.")
    api_key: str | None = Field(None, description="Ignored (reference compatibility).")
    model_id: str | None = Field(None, description="Ignored (reference compatibility).")
    owlv2_version_id: str | None = Field(None,
                                            description="Ignored (reference compatibility).")

    @field_validator("phrases")
    @classmethod
    def _phrases_valid(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        # the one phrase rule (owl_core.phrases); its errors are ValueErrors -> 422
        if value is not None:
            parse_phrases(value)
        return value

    def images(self) -> list[ImageRef]:
        return list(self.image) if isinstance(self.image, list) else [self.image]

    def classes(self) -> set[str]:
        """Class names of the boxes and the phrases."""
        return ({b.cls for t in self.training_data for b in t.boxes}
                | {p.cls for p in parse_phrases(self.phrases)})


class Prediction(BaseModel):
    """One detection: x, y = box centre, width, height in pixels of the original image."""

    model_config = ConfigDict(populate_by_name=True)

    x: float
    y: float
    width: float
    height: float
    confidence: float
    class_name: str = Field(alias="class")
    class_confidence: float | None = None
    class_id: int
    tracker_id: int | None = None
    detection_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    parent_id: str | None = None


class ImageSize(BaseModel):
    width: int
    height: int


class DetectionResponse(BaseModel):
    """Detections on one image (the reference's `ObjectDetectionInferenceResponse`)."""

    inference_id: str | None = None
    frame_id: int | None = None
    time: float | None = Field(None, description="Seconds the whole request took so far.")
    image: ImageSize
    predictions: list[Prediction]
    visualization: str | None = Field(None, description="Base64 JPEG when asked for.")


class ErrorResponse(BaseModel):
    """Any refused request: `message` says what is wrong and how to fix it."""

    message: str
    detail: Any = None


class WeightsInfo(BaseModel):
    name: str
    class_names: list[str]
    huggingface_id: str


def prediction_dicts(result_json: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine's `DetectionResult.to_json()` predictions with fresh detection ids."""
    return [{**p, "detection_id": str(uuid.uuid4())} for p in result_json["predictions"]]
