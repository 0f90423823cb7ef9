"""Strings from outside (project, class and image names, file names, error messages that echo
them) shown on the page as text, never as markup.

Gradio renders the message of `gr.Info` / `gr.Warning` / `gr.Error` as HTML and a
`gr.Markdown` value as Markdown with HTML: a project zip from someone else could otherwise put
an ``<img src=...>`` (a request to any server), a link or a password form inside the studio.
Every pop-up goes through `info` / `warning` / `error` (the whole message is escaped: no pop-up
carries markup of ours), and every outside string placed in Markdown through `md_text`.
Dropdowns, tables, gallery captions and textboxes show their values as text already.
"""

from __future__ import annotations

import html
import re

import gradio as gr

#: ASCII punctuation: each may start Markdown or HTML syntax, and CommonMark lets a backslash
#: make any of them literal (``\<img>`` is text, ``\[x\](y)`` is no link)
_MD_PUNCTUATION = re.compile(r"""([!-/:-@\[-`{-~])""")


def html_text(value: object) -> str:
    """`value` as HTML text: ``<img src=x>`` -> ``&lt;img src=x&gt;`` (quotes too)."""
    return html.escape(str(value), quote=True)


def md_text(value: object) -> str:
    """`value` as Markdown text: every punctuation character backslash-escaped (so neither
    HTML, a link, an image nor emphasis starts in it) and line breaks made spaces (no heading
    or list can start)."""
    flat = " ".join(str(value).splitlines())
    return _MD_PUNCTUATION.sub(r"\\\1", flat)


def info(message: str) -> None:
    """`gr.Info` with `message` shown as text."""
    gr.Info(html_text(message))


def warning(message: str) -> None:
    """`gr.Warning` with `message` shown as text."""
    gr.Warning(html_text(message))


def error(message: str) -> gr.Error:
    """A `gr.Error` (to raise) with `message` shown as text. Gradio prints no traceback for
    it: it is the person's mistake or a refusal, said on the page (`engine_errors` logs one
    line; a bug is logged with its traceback there)."""
    return gr.Error(html_text(message), print_exception=False)
