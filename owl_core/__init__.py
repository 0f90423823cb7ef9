"""owl_core: the cached OWLv2 few-shot detection engine (no UI code).

Embed each image once, then answer any set of drawn examples from cached embeddings:

    >>> from owl_core import OwlPredictor
    >>> predictor = OwlPredictor("google/owlv2-base-patch16-ensemble")
    >>> report = predictor.set_examples([{"image": "coins.png", "boxes": [
    ...     {"x": 155, "y": 51, "w": 49, "h": 46, "cls": "coin", "negative": False}]}])
    >>> result = predictor.detect("coins.png", confidence=0.9)
    >>> result.to_json()["predictions"][0]["class"]
    'coin'

Layers, each importing only those above it in this list (tests/test_layers.py checks it):
the foundation modules here (`errors`, `limits`, `params`, `geometry`, `images`, `memory`,
`naming`), `engine/` (model, embeddings, caches, matching, scoring, predictor, `.pt` prompt
files), `project/` (the project model, its library on disk, import, evaluation, dataset
export), `batch/` (the `owl-studio label` job), then the applications `cli/` and `rest/`.
"""

import sys
import warnings
from importlib import import_module
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

# name -> submodule; resolved on first use so that `import owl_core.engine.scoring` (or a cache
# worker process) doesn't pay for importing transformers.
_EXPORTS = {
    "CacheStats": "engine.cache", "EmbeddingCache": "engine.cache",
    "ImageEmbeddings": "engine.embedding",
    "ImageError": "errors", "LimitError": "errors", "OwlError": "errors",
    "ProjectError": "errors", "PtFormatError": "errors", "SettingsError": "errors",
    "TrainingDataError": "errors", "ModelLoadError": "engine.loading",
    "DetectParams": "params",
    "BoxMatch": "engine.matching", "Exemplars": "engine.matching", "MatchReport": "engine.matching",
    "DEFAULT_MODEL_ID": "engine.loading",
    "OwlModel": "engine.loading", "load_model": "engine.loading",
    "EmbedInfo": "engine.predictor", "OwlPredictor": "engine.predictor",
    "make_random_model": "engine.random_model",
    "SCORE_MODES": "engine.scoring", "DetectionResult": "engine.scoring",
    "SerializedPrompts": "engine.prompt_file",
    "load_pt": "engine.prompt_file",
    "ImageRecord": "project.model", "Label": "project.model", "Project": "project.model",
    "Prompt": "project.model",
    "load_project": "project.model", "save_project": "project.model",
    "ProjectLibrary": "project.library", "ProjectStore": "project.library",
    "open_image_folder": "project.folder_import",
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


#: Module paths of the flat layout (before the sub-packages) -> where the module lives now.
#: Old imports keep working, with a DeprecationWarning that names the new path.
MOVED_MODULES = {
    "batch_scoring": "engine.batch_scoring", "cache": "engine.cache",
    "data_dir": "project.data_dir", "dataset_export": "project.dataset_export",
    "embedding": "engine.embedding", "evaluate": "project.evaluate",
    "label": "batch.job", "label_io": "batch.outputs", "matching": "engine.matching",
    "model_loading": "engine.loading", "predictor": "engine.predictor",
    "project_cli": "cli.project", "project_import": "project.folder_import",
    "project_io": "project.library", "random_model": "engine.random_model",
    "ray_label": "batch.ray_embed", "scoring": "engine.scoring",
    "serialization": "engine.prompt_file", "store": "engine.embedding_store",
    "training_data": "engine.training_data", "transforms": "engine.transforms",
}


class _MovedModuleFinder(MetaPathFinder, Loader):
    """Resolves `owl_core.<old name>` to the module's new home (same module object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        prefix, _, rest = fullname.partition(".")
        if prefix != "owl_core" or rest not in MOVED_MODULES:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = f"owl_core.{MOVED_MODULES[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there.", DeprecationWarning,
                      stacklevel=2)
        return import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is already imported."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
