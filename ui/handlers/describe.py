""""Describe it": the text phrases of the picked class (and its "not this" phrases), the
button that gives every class its own name as a phrase, and how phrases and boxes combine.

Every edit goes into the project model (`Project.set_phrases`, `Project.set_settings`), so the
phrases are saved with the project and the preview, the `.pt` downloads and the meter use them.
A phrase is embedded before it is stored: a phrase the model's tokenizer can't take is refused
with the engine's message and nothing changes; the preview then finds the embedding in the
text cache, and a phrase edit embeds only the phrases that are new (`owl_core.engine.text`).
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from owl_core.params import COMBINE_MODES
from ui.escape import error, info, warning
from ui.handlers.common import Area, engine_errors
from ui.session import Session

#: Phrases are typed in one line, separated by ';' (a comma may be part of a phrase).
PHRASE_SEPARATOR = ";"
_SPLIT = re.compile(r"[;\n]")


def split_phrases(text: str | None) -> list[str]:
    """The phrases typed in a describe field: split at ';' (or a line break); separators at
    either end are ignored, an empty phrase between two others is kept (the project refuses it
    with the engine's "the phrase is empty" message)."""
    parts = [p.strip() for p in _SPLIT.split(str(text or ""))]
    while parts and not parts[0]:
        parts.pop(0)
    while parts and not parts[-1]:
        parts.pop()
    return parts


def join_phrases(phrases: Any) -> str:
    return f"{PHRASE_SEPARATOR} ".join(phrases)


class DescribeHandlers(Area):
    """The describe fields, the class-names button and the combine control."""

    def __init__(self, ctx: Any, preview: Any) -> None:
        super().__init__(ctx)
        self.preview = preview

    def fields(self, s: Session) -> dict:
        """The describe fields of the picked class, and the combine mode (call under the
        lock)."""
        cls = s.active_class
        core = s.core
        return {
            self.c.phrases: gr.update(value=join_phrases(core.phrases.get(cls, ())),
                                      label=f"Describe {cls!r}" if cls else "Describe it",
                                      placeholder=f"Describe {cls!r} in words, e.g. a coin; "
                                                  "a round coin" if cls else "Add a class first",
                                      interactive=bool(cls)),
            self.c.negative_phrases: gr.update(
                value=join_phrases(core.negative_phrases.get(cls, ())),
                label=f"Not {cls!r}" if cls else "Not this",
                placeholder=f"Not {cls!r}: e.g. a button" if cls else "",
                interactive=bool(cls)),
            self.c.combine: core.settings.combine,
        }

    def on_show(self, request: gr.Request) -> dict:
        """Another class picked or another project opened: show its phrases."""
        s = self.session(request)
        with s.lock:
            return self.fields(s) if s.core is not None else {}

    def _set(self, text: str, negative: bool, request: gr.Request) -> dict:
        s = self.session(request)
        with s.lock:
            cls = s.active_class
            if not cls:
                raise error("Add a class first: the words describe the class picked in the "
                            "Class list.")
            store = s.core.negative_phrases if negative else s.core.phrases
            old = store.get(cls, ())
            new = s.core.set_phrases(cls, split_phrases(text), negative=negative)
            if new == old:
                return self.fields(s)
            try:  # the tokenizer's limit, before the preview needs it (cached: only new ones)
                s.predictor.embed_phrases([p for p in new if p not in old])
            except Exception:
                s.core.set_phrases(cls, old, negative=negative)
                raise
            out = self.fields(s)
            out.update(self.preview.refresh(s, what="phrase"))
            return out

    @engine_errors
    def on_phrases(self, text: str, request: gr.Request) -> dict:
        """The describe field was submitted or left: the picked class's phrases become the
        ones typed (an empty field removes them)."""
        return self._set(text, False, request)

    @engine_errors
    def on_negative_phrases(self, text: str, request: gr.Request) -> dict:
        """The "not this" field: phrases of what the picked class is not."""
        return self._set(text, True, request)

    @engine_errors
    def on_use_class_names(self, request: gr.Request) -> dict:
        """Every class without phrases gets its own name as its phrase (one click to a
        zero-shot preview); a name the model can't read as words is skipped and said."""
        s = self.session(request)
        with s.lock:
            added, skipped = [], []
            for cls in list(s.core.classes):
                if s.core.phrases.get(cls):
                    continue
                try:
                    phrase = s.core.set_phrases(cls, [cls])
                    s.predictor.embed_phrases(list(phrase))
                    added.append(cls)
                except Exception as exc:  # noqa: BLE001 - said per class, the others go on
                    s.core.set_phrases(cls, [])
                    skipped.append(f"{cls}: {exc}")
            if skipped:
                warning("Not used as phrases: " + "; ".join(skipped))
            if not added and not skipped:
                info("Every class has phrases already.")
            out = self.fields(s)
            out.update(self.preview.refresh(s, what="phrase"))
            return out

    @engine_errors
    def on_combine(self, mode: str, request: gr.Request) -> dict:
        """How a class's phrases and boxes combine (saved in the project's settings, used by
        the preview, the downloads and the meter)."""
        if mode not in COMBINE_MODES:
            return {}
        s = self.session(request)
        with s.lock:
            if s.core.settings.combine != mode:
                s.core.set_settings(s.core.settings.replace(combine=mode))
            return self.preview.refresh(s, what="combine")
