"""`DetectParams`: the one typed detection-settings object.

Used by the engine (`OwlPredictor.detect`), the CLI, the HTTP API, the UI sliders and the project
file, instead of loose positional slider values. Validated on construction; `from_dict` reads
untrusted dicts (a `.pt`'s settings, a request, a project file) and refuses what it can't use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from owl_core.errors import SettingsError

ScoreMode = Literal["reference", "calibrated"]
SCORE_MODES: tuple[str, ...] = ("reference", "calibrated")
#: How a class's phrases and box exemplars make its score (see `owl_core.engine.matching.
#: combine_exemplars`): "max" = a phrase is one more positive exemplar (best match wins, as
#: Roboflow's max over exemplars); "fused" = one prototype per class, the normalised sum of the
#: normalised mean phrase embedding and the normalised mean box exemplar (Kaul et al. 2023).
CombineMode = Literal["max", "fused"]
COMBINE_MODES: tuple[str, ...] = ("max", "fused")
DEFAULT_CONFIDENCE = 0.9
#: The confidence slider's step: the meter suggests only confidences the slider can be set to.
CONFIDENCE_STEP = 0.01
DEFAULT_IOU_THRESHOLD = 0.3
DEFAULT_MAX_DETECTIONS = 300
DEFAULT_MATCH_THRESHOLD = 0.3
#: Upper bound on max_detections (a request can't ask for unbounded output).
MAX_DETECTIONS_LIMIT = 10_000


def _unit(name: str, value: Any, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number in [0, 1], got {value!r}.")
    value = float(value) if not isinstance(value, int) or abs(value) < 2**64 \
        else (math.inf if value > 0 else -math.inf)  # float() of a 400-digit int overflows
    if not math.isfinite(value) or not (0.0 < value if open_low else 0.0 <= value) or value > 1.0:
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise SettingsError(f"{name} must be in {interval}, got {value}.")
    return value


@dataclass(frozen=True)
class DetectParams:
    """Detection settings.

    Attributes:
        confidence: minimum score of a detection, in [0, 1].
        iou_threshold: NMS IoU (per class, then across classes), in [0, 1].
        max_detections: most detections per image, 0..`MAX_DETECTIONS_LIMIT`.
        score_mode: "reference" ((cos + 1) / 2, as Roboflow) or "calibrated" (model's logit).
        match_threshold: IoU a drawn box needs with a predicted box to become an exemplar,
            in (0, 1].
        combine: how phrases and box exemplars of a class combine: "max" or "fused" (see
            `COMBINE_MODES`).
    """

    confidence: float = DEFAULT_CONFIDENCE
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    max_detections: int = DEFAULT_MAX_DETECTIONS
    score_mode: ScoreMode = "reference"
    match_threshold: float = DEFAULT_MATCH_THRESHOLD
    combine: CombineMode = "max"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "confidence", _unit("confidence", self.confidence))
        set_(self, "iou_threshold", _unit("iou_threshold", self.iou_threshold))
        set_(self, "match_threshold", _unit("match_threshold", self.match_threshold,
                                            open_low=True))
        md = self.max_detections
        if isinstance(md, float) and md.is_integer():
            md = int(md)
        if isinstance(md, bool) or not isinstance(md, int) or not 0 <= md <= MAX_DETECTIONS_LIMIT:
            raise SettingsError(f"max_detections must be an integer in 0..{MAX_DETECTIONS_LIMIT}, "
                                f"got {self.max_detections!r}.")
        set_(self, "max_detections", int(md))
        if self.score_mode not in SCORE_MODES:
            raise SettingsError(f"unknown score mode {self.score_mode!r}; use one of "
                                f"{', '.join(SCORE_MODES)}.")
        if self.combine not in COMBINE_MODES:
            raise SettingsError(f"unknown combine mode {self.combine!r}; use one of "
                                f"{', '.join(COMBINE_MODES)}.")

    def replace(self, **changes: Any) -> DetectParams:
        """A copy with some fields changed (None values are ignored), validated again."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def detect_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `OwlPredictor.detect` (and, without "combine", of
        `scoring.detect`)."""
        return {"confidence": self.confidence, "iou_threshold": self.iou_threshold,
                "max_detections": self.max_detections, "score_mode": self.score_mode,
                "combine": self.combine}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, strict: bool = False) -> DetectParams:
        """Settings from an untrusted mapping: known keys validated, unknown ones ignored
        (or refused with ``strict=True``); missing keys take the defaults."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SettingsError(f"settings must be a mapping, got {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in data if k not in names)
        if strict and unknown:
            raise SettingsError(f"unknown settings {unknown[:5]}; expected some of "
                                f"{sorted(names)}.")
        return cls(**{k: data[k] for k in names if k in data and data[k] is not None})
