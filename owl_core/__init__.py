"""owl_core: the cached OWLv2 few-shot detection engine (no UI code).

Embed each image once, then answer any set of drawn examples from cached embeddings:

    >>> from owl_core import OwlPredictor
    >>> predictor = OwlPredictor("google/owlv2-base-patch16-ensemble")
    >>> report = predictor.set_examples([{"image": "coins.png", "boxes": [
    ...     {"x": 155, "y": 51, "w": 49, "h": 46, "cls": "coin", "negative": False}]}])
    >>> result = predictor.detect("coins.png", confidence=0.9)
    >>> result.to_json()["predictions"][0]["class"]
    'coin'
"""

from importlib import import_module
from typing import Any

# name -> submodule; resolved on first use so that `import owl_core.scoring` (or a cache worker
# process) doesn't pay for importing transformers.
_EXPORTS = {
    "CacheStats": "cache", "EmbeddingCache": "cache",
    "ImageEmbeddings": "embedding",
    "ImageError": "errors", "LimitError": "errors", "OwlError": "errors",
    "ProjectError": "errors", "PtFormatError": "errors", "SettingsError": "errors",
    "TrainingDataError": "errors", "ModelLoadError": "model_loading",
    "DetectParams": "params",
    "BoxMatch": "matching", "Exemplars": "matching", "MatchReport": "matching",
    "DEFAULT_MODEL_ID": "model_loading",
    "OwlModel": "model_loading", "load_model": "model_loading",
    "EmbedInfo": "predictor", "OwlPredictor": "predictor",
    "make_random_model": "random_model",
    "SCORE_MODES": "scoring", "DetectionResult": "scoring",
    "SerializedPrompts": "serialization",
    "load_pt": "serialization",
    "ImageRecord": "project", "Label": "project", "Project": "project", "Prompt": "project",
    "load_project": "project", "save_project": "project",
    "ProjectStore": "project_io", "open_image_folder": "project_import",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'owl_core' has no attribute {name!r}")
    value = getattr(import_module(f"owl_core.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
