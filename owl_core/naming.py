"""Class names: the one rule every reader of a class name applies (the project model, training
data and `.pt` class lists, the studio's class list, the REST request schema).

A class name is a string of at most ``max_class_name_chars`` characters (`owl_core.limits`,
counted before cleaning, so a huge one is refused before it is copied); runs of whitespace
become one space and the ends are stripped; what is left is not empty, has no control
characters, and does not start with ``NOT `` (the studio writes a negative box of class ``coin``
as ``NOT coin``). Two names are the same class when their `class_key` is equal (case is
ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from owl_core import limits
from owl_core.errors import OwlError, ProjectError, PtFormatError, TrainingDataError

#: How the studio marks a negative box's label ("NOT coin"); no class name starts with it.
NEGATIVE_PREFIX = "NOT "

#: The `LimitError` that is also each area's own error (``except ProjectError`` catches both).
_LIMIT_ERRORS: dict[type[OwlError], type[limits.LimitError]] = {
    ProjectError: limits.ProjectLimitError,
    TrainingDataError: limits.TrainingDataLimitError,
    PtFormatError: limits.PtLimitError,
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _checked(name: Any, where: str, error: type[OwlError], what: str) -> str:
    """The part of the rule every class name meets: a string within the length bound, not
    blank, no control characters. Returns the cleaned form."""
    if not isinstance(name, str):
        raise error(f"{where}: {what} a non-empty class name (a string), got {_shown(name)}.")
    limits.current().check("max_class_name_chars", len(name),
                           f"{where}: characters in the class name {name[:40]!r}...",
                           _LIMIT_ERRORS.get(error, limits.LimitError))
    cleaned = " ".join(name.split())
    if not cleaned:
        raise error(f"{where}: empty. Type a class name first (for example: coin).")
    if any(not ch.isprintable() for ch in cleaned):
        raise error(f"{where}: {cleaned[:40]!r} contains control characters; remove them.")
    return cleaned


def clean_class_name(name: Any, where: str = "class name",
                     error: type[OwlError] = ProjectError) -> str:
    """The cleaned class name (whitespace runs collapsed, ends stripped), or `error` saying
    what is wrong and how to fix it.

    Args:
        name: what the caller was given.
        where: what the message calls it ("boxes[3]", "classes[0]", "class name").
        error: the caller's error class (`ProjectError`, `TrainingDataError`); a name over the
            length bound raises the `LimitError` subclass that is also `error`.
    """
    cleaned = _checked(name, where, error, "'cls' must be")
    if cleaned.upper().startswith(NEGATIVE_PREFIX) or cleaned.upper() == NEGATIVE_PREFIX.strip():
        raise error(f"{where}: {cleaned!r} can't start with {NEGATIVE_PREFIX.strip()!r}; that "
                    "prefix marks negative boxes.")
    return cleaned


def class_key(name: str) -> str:
    """What makes two class names the same class: whitespace runs collapsed, case ignored
    ("Red  Cup" and "red cup" are one class)."""
    return " ".join(name.split()).casefold()


def stored_class_names(names: Sequence[Any], where: str = "class_names",
                       error: type[OwlError] = PtFormatError) -> list[str]:
    """Class names as another tool stored them (a `.pt` file's ``class_names``, Roboflow's
    included), checked by the same rule but kept exactly as written: each is a string within
    the length bound, not blank, without control characters, and no name repeats.

    Roboflow lets a class be any string, and a file's names are keys of its exemplars and the
    names its detections come back with, so nothing is renamed: spacing and case stay (``"Cup"``
    and ``"cup"`` are two classes there) and ``NOT ...`` is allowed (a project that imports the
    file applies `clean_class_name`, which says so)."""
    out = []
    for i, name in enumerate(names):
        _checked(name, f"{where}[{i}]", error, "must be")
        out.append(name)
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        raise error(f"{where}: repeated names {[n[:40] for n in repeated[:5]]}; each class once.")
    return out
