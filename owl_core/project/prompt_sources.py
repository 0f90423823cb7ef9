"""Prompts from command-line flags: the one reader of ``--weights`` / ``--project`` /
``--training-data``, ``--text CLASS[=PHRASE]``, ``--combine`` and ``--model`` for every
command that detects (``predict``, ``export``, ``label``, ``evaluate``, ``export-dataset``).

``--text`` (repeatable) adds a text prompt to any source, or is the prompt alone (zero-shot);
a project's own phrases come with its boxes; ``--combine max|fused`` says how a class's phrases
and boxes combine.

Everything is read and validated before any model is loaded (a typo fails in a second, not
after a minute of loading). It lives in the project layer, not in ``cli/``, because the
``label`` job (``batch/``) and the project commands use it too, and lower layers never import
``cli/``.

To add a prompt flag: declare it in `add_prompt_arguments` (every command gets it), read it in
`read_prompts` into a field of `Prompts`, and use it in `Prompts.apply`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owl_core.errors import SettingsError
from owl_core.params import COMBINE_MODES, DetectParams
from owl_core.phrases import with_text_flags

if TYPE_CHECKING:
    from owl_core.engine.prompt_file import SerializedPrompts
    from owl_core.project.model import Project

#: Each prompt source: its flag's help (a command picks which sources it offers).
SOURCES = {
    "training_data": "train.json in the reference schema, or a project file",
    "project": "a project folder (its examples, phrases and settings)",
    "weights": "an exported prompts .pt",
}

TEXT_HELP = ("text prompt CLASS[=PHRASE] (repeatable): --text coin is class 'coin' with the "
             "phrase 'coin'; --text 'coin=a round coin' gives the phrase explicitly. Alone "
             "(zero-shot) or with the other prompt sources")


def add_prompt_arguments(p: argparse.ArgumentParser, sources: Sequence[str], *,
                         model_default: str | None = None, of_project: bool = False) -> None:
    """The prompt flags: at most one of `sources` (mutually exclusive), ``--text`` (with a
    source or alone), ``--combine`` and ``--model``.

    Args:
        of_project: the command works on a project (``--project`` required, its subject); the
            `sources` then optionally replace the project's own examples.
    """
    from owl_core.engine.loading import DEFAULT_MODEL_ID

    if of_project:
        p.add_argument("--project", required=True, help="project folder (or its project.json)")
    group = p.add_mutually_exclusive_group()  # none is fine with --text (read_prompts)
    for source in sources:
        help_text = SOURCES[source] + (", to detect with instead of the project's own examples"
                                       if of_project else "")
        group.add_argument(f"--{source.replace('_', '-')}", default=None, help=help_text)
    p.add_argument("--text", action="append", default=None, metavar="CLASS[=PHRASE]",
                   help=TEXT_HELP + (" (classes of the project)" if of_project else ""))
    p.add_argument("--combine", default=None, choices=COMBINE_MODES,
                   help="how a class's phrases and boxes combine (default: the project's or "
                        "the .pt's setting, else max)")
    p.set_defaults(prompt_command=p.prog.split()[-1])  # its name, for read_prompts' errors
    p.add_argument("--model", default=model_default,
                   help=f"hub id or folder (default: {model_default or DEFAULT_MODEL_ID}"
                        + (")" if model_default else ", or the .pt's model)"))


@dataclass(frozen=True)
class Prompts:
    """What the flags chose, read and validated.

    Attributes:
        model: the hub id or folder to load (``--model``, else the .pt's, else the default).
        top_k: candidates per image (``--top-k``, else the .pt's, else the default).
        base: detection settings before the flags: the .pt's or the project's, else defaults.
        weights: the ``--weights`` file (its prompts replace any examples).
        data, classes: reference-schema training data and class order (no ``--weights``;
            None classes: the engine orders them).
        phrases: text prompts per class: the project's (no ``--weights``) and ``--text``'s.
        project: the ``--project`` read (None without it).
        queries: the project's query images (the default images of a project command).
    """

    model: str
    top_k: int
    base: DetectParams
    weights: str | None = None
    data: list[dict[str, Any]] | None = None
    classes: list[str] | None = None
    project: Project | None = None
    queries: tuple[Path, ...] = field(default=())
    phrases: dict[str, list[str]] = field(default_factory=dict)

    def params(self, args: argparse.Namespace) -> DetectParams:
        """`base` with every detection flag the command has and the person gave."""
        return self.base.replace(**{name: getattr(args, name, None) for name in (
            "confidence", "iou_threshold", "max_detections", "score_mode", "match_threshold",
            "combine")})

    def apply(self, predictor: Any, warn: Callable[[str], None]) -> None:
        """Give the predictor these prompts: the .pt's or the examples, and the phrases
        (each example box that matched nothing is reported through `warn`)."""
        if self.weights:
            predictor.load_pt(self.weights)
            if self.phrases:  # beside the file's prompts
                predictor.set_examples([], phrases=self.phrases)
            return
        report = predictor.set_examples(self.data or [], self.classes, phrases=self.phrases)
        for box in report.unmatched:
            warn(f"warning: training_data[{box.image_index}].boxes[{box.box_index}] ({box.cls}"
                 f"{', negative' if box.negative else ''}) matched nothing: {box.reason}")


def read_prompts(args: argparse.Namespace, project: Project | None = None) -> Prompts:
    """The prompts the flags name (``--weights`` / ``--project`` / ``--training-data``,
    ``--text``, ``--model``, ``--top-k``), validated before any model is loaded.

    Args:
        args: parsed flags; a flag the command lacks reads as not given.
        project: a project the command has read already (``evaluate``: ``--project`` is its
            subject, so each ``--text`` class must be one of its classes (its labels are what
            is measured), and ``--weights`` may replace its examples and phrases).

    Raises:
        SettingsError: no prompt at all; a project without example boxes or phrases (and no
            ``--weights`` or ``--text``); a bad ``--text``.
        ProjectError: a ``--text`` class the subject `project` lacks.
        PtFormatError / TrainingDataError: the file is refused.
    """
    from owl_core.engine.loading import DEFAULT_MODEL_ID
    from owl_core.engine.predictor import DEFAULT_TOP_K

    weights = getattr(args, "weights", None)
    wanted_top_k = getattr(args, "top_k", None)
    text = list(getattr(args, "text", None) or ())
    if project is not None:  # the subject's classes, spelled as the project spells them
        text = [f"{project.classes[project.class_index(cls)]}={phrase if sep else cls}"
                for cls, sep, phrase in (flag.partition("=") for flag in text)]
    if weights:
        from owl_core.engine.prompt_file import load_pt

        prompts: SerializedPrompts = load_pt(weights)
        settings = prompts.meta.get("settings")
        exported = prompts.meta.get("top_k")
        base = (project.settings if project is not None
                else DetectParams.from_dict(settings if isinstance(settings, dict) else None))
        return Prompts(model=getattr(args, "model", None) or prompts.huggingface_id,
                       top_k=wanted_top_k if wanted_top_k is not None
                       else exported if isinstance(exported, int) else DEFAULT_TOP_K,
                       base=base, weights=weights, project=project,
                       queries=tuple(project.query_images()) if project is not None else (),
                       phrases=with_text_flags(None, None, text)[1])
    model = getattr(args, "model", None) or DEFAULT_MODEL_ID
    top_k = wanted_top_k if wanted_top_k is not None else DEFAULT_TOP_K
    folder = getattr(args, "project", None)
    if project is None and folder:
        from owl_core.project.model import load_project

        project = load_project(folder, allow_external=True)
    if project is not None:
        data = project.training_data()
        classes, phrases = with_text_flags(project.classes, project.prompt_phrases(), text)
        if not data and not phrases:
            raise SettingsError(
                f"{folder or project.name}: the project has no example boxes or phrases yet; "
                "draw some first, add --text CLASS"
                + (", or pass --weights FILE.pt." if hasattr(args, "weights") else "."))
        return Prompts(model=model, top_k=top_k, base=project.settings, data=data,
                       classes=classes, project=project,
                       queries=tuple(project.query_images()), phrases=phrases)
    training = getattr(args, "training_data", None)
    if not training and not text:
        given = [f"--{name.replace('_', '-')}" for name in SOURCES if hasattr(args, name)]
        raise SettingsError(f"{getattr(args, 'prompt_command', 'detect')}: give the prompts: "
                            f"{', '.join(given)} and/or --text CLASS[=PHRASE].")
    data: list[dict[str, Any]] = []
    classes = None
    if training:
        from owl_core.engine.training_data import parse_training_data
        from owl_core.project.model import read_training_file

        data, classes = read_training_file(training)
        parse_training_data(data)
    classes, phrases = with_text_flags(classes, None, text)
    return Prompts(model=model, top_k=top_k, base=DetectParams(), data=data, classes=classes,
                   phrases=phrases)
