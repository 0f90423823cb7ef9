"""Projects: what a person labels (`model`), kept on disk (`library`), made from a folder
(`folder_import`, `data_dir`), measured (`evaluate`) and exported as a dataset
(`dataset_export`). Imports the foundation and `engine`, never `batch`, `cli` or `rest`.

The project model's names are importable from here: ``from owl_core.project import Project``.
"""

from importlib import import_module
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(import_module("owl_core.project.model"), name)
