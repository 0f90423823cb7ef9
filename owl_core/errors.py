"""One error hierarchy for everything the engine refuses.

Every error raised on bad *input* (a file, a request, a setting, an image) derives from
`OwlError`, so an edge (CLI, HTTP, UI) catches exactly `OwlError` and shows its message; any
other exception is a bug, logged with its traceback. Each subclass also derives from the
builtin it replaced (`ValueError` / `RuntimeError`) so older callers keep working.
Messages name what was expected, what arrived, and the fix.
"""

from __future__ import annotations


class OwlError(Exception):
    """Base class: bad input or an unusable resource, with a message meant for a person."""


class SettingsError(OwlError, ValueError):
    """A detection / engine setting out of range (confidence, IoU, top-K, score mode...)."""


class TrainingDataError(OwlError, ValueError):
    """Malformed training data; the message names the image/box and the fix."""


class ImageError(OwlError, ValueError):
    """An image that cannot be read, is too large, or has an unsupported type."""


class PtFormatError(OwlError, ValueError):
    """A `.pt` prompt file that is refused: malformed, too large, or needing code to load."""


class ProjectError(OwlError, ValueError):
    """A project folder / project.json that cannot be read, written or is inconsistent."""


class ProjectChangedError(ProjectError):
    """A save refused because another writer (a tab, a process) changed the project on disk
    since this one last read or wrote it: saving over it would drop that work."""


class LimitError(OwlError, ValueError):
    """Input over a documented bound (sizes, counts, lengths); the message names the limit."""


class DataDirError(OwlError, ValueError):
    """A server folder path refused: no ``--data-dir``, outside it (``..``, a link), missing."""


class ModelLoadError(OwlError, RuntimeError):
    """A checkpoint could not be loaded. The message names the model, the problem and the fix.

    Attributes:
        model_id: the model as given.
        problem: what went wrong, without the remedies.
    """

    def __init__(self, model_id: str, problem: str, remedy: str = "") -> None:
        self.model_id = model_id
        self.problem = problem
        super().__init__(f"Cannot load the OWLv2 model {model_id!r}: {problem} {remedy}".strip())
