"""Text phrases of a class ("describe it": zero-shot prompts), the one check every reader uses.

A class may be prompted with words as well as drawn boxes: each `PromptPhrase` names its class,
its text and whether it is a negative ("not this"). This module is the one parser of phrases
from outside (the HTTP extension field, the CLI's ``--text``, a project file, a `.pt`'s
metadata) and the one rule for a phrase's text: whitespace runs collapse to one space, it must
be non-empty, printable (no control characters) and at most `max_phrase_chars` long, and there
are at most `max_phrases_per_class` per class and `max_phrases_total` in all (`owl_core.limits`).
Whether the model's tokenizer can take the phrase (OWLv2 reads 16 tokens) is checked by the
engine when it embeds it (`owl_core.engine.text`). Light: no torch, no transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from owl_core import limits
from owl_core.errors import TrainingDataError
from owl_core.limits import TrainingDataLimitError
from owl_core.naming import clean_class_name


@dataclass(frozen=True)
class PromptPhrase:
    """One phrase of a class: its class name, text (cleaned) and polarity."""

    cls: str
    text: str
    negative: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"cls": self.cls, "text": self.text, "negative": self.negative}


def check_phrase(text: Any, where: str = "phrase", lim: limits.Limits | None = None) -> str:
    """A phrase's text, whitespace collapsed; `TrainingDataError` naming the problem and the
    fix when it is not a string, empty, has control characters or is too long."""
    if not isinstance(text, str):
        raise TrainingDataError(f"{where}: a phrase must be a string of words, got "
                                f"{type(text).__name__}.")
    (lim or limits.current()).check("max_phrase_chars", len(text),
                                    f"{where}: characters in the phrase {text[:40]!r}...",
                                    TrainingDataLimitError)
    cleaned = " ".join(text.split())
    if not cleaned:
        raise TrainingDataError(f"{where}: the phrase is empty; type a few words that describe "
                                "the object (for example: a coin), or remove it.")
    bad = sorted({f"U+{ord(ch):04X}" for ch in cleaned if not ch.isprintable()})
    if bad:
        raise TrainingDataError(f"{where}: the phrase {cleaned[:40]!r} contains control "
                                f"characters ({', '.join(bad[:5])}); remove them.")
    return cleaned


def _class_name(cls: Any, where: str, lim: limits.Limits) -> str:
    return clean_class_name(cls, where, TrainingDataError)  # the one class-name rule


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TrainingDataError(f"{where}: 'negative' must be true or false, got {value!r}"[:200]
                                + ".")
    return value


def parse_phrases(data: Any, where: str = "phrases") -> tuple[PromptPhrase, ...]:
    """Phrases from untrusted data, validated and bounded, duplicates dropped (first kept).

    Accepted forms:
        None: no phrases.
        ``{class: [phrase, ...]}``: a phrase is a string (positive) or
            ``{"text": str, "negative": bool}``; a lone string stands for a one-phrase list.
        ``[{"cls": class, "text": str, "negative": bool}, ...]`` or `PromptPhrase` objects.

    Raises:
        TrainingDataError: naming the entry and the fix (a `LimitError` too over a bound).
    """
    lim = limits.current()
    if data is None:
        return ()
    items: list[tuple[Any, Any, Any, str]] = []  # (cls, text, negative, where)
    if isinstance(data, Mapping):
        lim.check("max_classes", len(data), f"{where}: classes", TrainingDataLimitError)
        for cls, phrases in data.items():
            at = f"{where}[{str(cls)[:40]!r}]"
            if isinstance(phrases, (str, Mapping)):
                phrases = [phrases]
            if not isinstance(phrases, Sequence):
                raise TrainingDataError(f"{at}: expected a list of phrases, got "
                                        f"{type(phrases).__name__}.")
            lim.check("max_phrases_total", len(phrases), f"{at}: phrases",
                      TrainingDataLimitError)
            for j, item in enumerate(phrases):
                if isinstance(item, Mapping):
                    items.append((cls, item.get("text"), item.get("negative", False),
                                  f"{at}[{j}]"))
                else:
                    items.append((cls, item, False, f"{at}[{j}]"))
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        lim.check("max_phrases_total", len(data), f"{where}: phrases", TrainingDataLimitError)
        for j, item in enumerate(data):
            at = f"{where}[{j}]"
            if isinstance(item, PromptPhrase):
                items.append((item.cls, item.text, item.negative, at))
            elif isinstance(item, Mapping):
                if "cls" not in item or "text" not in item:
                    raise TrainingDataError(f"{at}: a phrase needs 'cls' (the class) and 'text' "
                                            "(the words).")
                items.append((item["cls"], item["text"], item.get("negative", False), at))
            else:
                raise TrainingDataError(f"{at}: expected {{'cls', 'text', 'negative'}}, got "
                                        f"{type(item).__name__}.")
    else:
        raise TrainingDataError(f"{where}: expected {{class: [phrase, ...]}} or a list of "
                                f"{{'cls', 'text', 'negative'}}, got {type(data).__name__}.")
    lim.check("max_phrases_total", len(items), f"{where}: phrases", TrainingDataLimitError)
    out: dict[tuple[str, str, bool], PromptPhrase] = {}
    per_class: dict[str, int] = {}
    for cls, text, negative, at in items:
        phrase = PromptPhrase(_class_name(cls, at, lim), check_phrase(text, at, lim),
                              _flag(negative, at))
        key = (phrase.cls, phrase.text, phrase.negative)
        if key in out:
            continue
        out[key] = phrase
        per_class[phrase.cls] = per_class.get(phrase.cls, 0) + 1
        lim.check("max_phrases_per_class", per_class[phrase.cls],
                  f"{where}: phrases of class {phrase.cls[:40]!r}", TrainingDataLimitError)
        lim.check("max_classes", len(per_class), f"{where}: classes", TrainingDataLimitError)
    return tuple(out.values())


def phrase_classes(phrases: Sequence[PromptPhrase]) -> list[str]:
    """Class names of the phrases, in order of first appearance."""
    return list(dict.fromkeys(p.cls for p in phrases))


# ------------------------------------------------------------------------------- CLI flags
# The ``--text`` flag itself is declared once, with the other prompt flags, in
# `owl_core.project.prompt_sources.add_prompt_arguments`; these parse its values.


def text_flag(value: str, where: str = "--text") -> PromptPhrase:
    """``"coin"`` -> class coin, phrase "coin"; ``"coin=a round coin"`` -> that phrase."""
    cls, sep, text = str(value).partition("=")
    return PromptPhrase(cls.strip(), text if sep else cls)


def with_text_flags(classes: Sequence[str] | None, phrases: Mapping[str, Sequence[Any]] | None,
                    flags: Sequence[str] | None) -> tuple[list[str] | None, dict[str, list[Any]]]:
    """The class list and phrases of a prompt after adding ``--text`` flags: flag classes not
    in `classes` are appended (None stays None: the engine orders classes itself); every
    phrase validated by `parse_phrases` (a negative one stays ``{"text", "negative": True}``)."""
    out: dict[str, list[Any]] = {cls: list(items) for cls, items in (phrases or {}).items()}
    for i, value in enumerate(flags or ()):
        flag = text_flag(value, f"--text[{i}]")
        out.setdefault(flag.cls, []).append(flag.text)
    parsed = parse_phrases(out, "--text" if flags else "phrases")
    names = None if classes is None else list(classes) + [
        c for c in phrase_classes(parsed) if c not in classes]
    grouped: dict[str, list[Any]] = {}
    for p in parsed:
        grouped.setdefault(p.cls, []).append({"text": p.text, "negative": True} if p.negative
                                             else p.text)
    return names, grouped
