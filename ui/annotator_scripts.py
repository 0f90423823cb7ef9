"""Page scripts for the two box annotators (`#annotator`, `#review-annotator`): number keys in
the label dialog, and a canvas that keeps the image's aspect ratio.

Both work around `gradio_image_annotation` (0.5.x) from the outside, through its DOM:

* **Keys 1-9** in the label dialog pick the n-th class of the project (the order of the
  legend, whose chips show the numbers), wherever the dialog lists it (the server puts the
  class picked in the page first in the dialog's list). The pick is the click a person would
  make on the list entry, so the dialog takes the label *and* its colour; **Enter** still
  confirms. Digits stay digits in any other text field, and in the dialog's own field once the
  person has typed a label of their own there.
* **Accepting a grey box** (review annotator): the label dialog opens on the box's own label
  *and colour*, and its Enter / OK keep both, so confirming the proposed class left the box
  grey (a detection, not a label) unless the person picked the class again. An Enter or OK
  in a dialog that still shows the grey colour first picks the typed class in the list (the
  click a person would make: label and class colour), then confirms. Cancel / Escape still
  leave the box grey; nothing happens while the dialog is open, so the person's own clicks
  and typing there never race a script.
* **Select first** (review annotator): the component starts in box-creation mode when its
  first image has no boxes, and stays in it: a click on a grey box drew a box without area
  instead of selecting it. Each newly shown image starts in "Drag boxes" mode (a click
  selects); **C** still draws.
* **Tall images**: the component sizes its canvas to the container's width (shrinking a wider
  image to fit) and makes it as tall as the image then is; a CSS height cap squashed tall
  images (its canvas kept its width). Capping the *width* of the canvas's container at
  ``MAX_CANVAS_HEIGHT * width / height`` of the image instead gives a canvas at most that tall
  with the image's aspect ratio, and the component's own mouse-to-image mapping stays exact.
  The component's ``height`` / ``width`` parameters set the canvas's CSS size only (the same
  squash), so they cannot do this.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui.labels import SUGGESTION_COLOR

#: The annotators' canvas is at most this tall (CSS pixels), so the page still fits a screen.
MAX_CANVAS_HEIGHT = 520

#: Installed once on page load: keys 1-9 while a box label dialog is open.
ANNOTATOR_KEYS_JS = """() => {
  if (window.__owlAnnotatorKeys) return [];
  window.__owlAnnotatorKeys = true;
  const TEXT = /^(text|search|email|url|tel|password|number|date|datetime-local|month|week|time)$/;
  const isText = (t) => !!t && ((t.tagName === 'INPUT' && TEXT.test(t.type)) ||
                                t.tagName === 'TEXTAREA' || t.isContentEditable);
  const FIELD = "input[aria-label='Label']";
  // a label the person types into the dialog keeps its digits
  document.addEventListener('input', (e) => {
    const t = e.target;
    const dialog = t && t.closest ? t.closest('#model-box-edit') : null;
    if (dialog && t.matches(FIELD)) dialog.dataset.owlTyped = '1';
  }, true);
  // the dialog's list, opened afresh (unfiltered), then the n-th class clicked
  const pick = (dialog, n, frames) => {
    const items = Array.from(dialog.querySelectorAll('li[data-index]')).filter(
      (li) => !(li.getAttribute('aria-label') || '').startsWith('NOT '));
    if (!items.length) {
      if (frames > 0) requestAnimationFrame(() => pick(dialog, n, frames - 1));
      return;
    }
    // stable numbers: the n-th class of the project (the legend's order), wherever the
    // dialog lists it (it lists the class picked in the page first)
    const order = Array.from(document.querySelectorAll('#legend .chip[data-class]'))
      .map((c) => c.dataset.class);
    const item = order.length
      ? items.find((li) => li.getAttribute('aria-label') === order[n - 1])
      : items[n - 1];
    if (item) item.dispatchEvent(new MouseEvent('mousedown', {bubbles: true, cancelable: true}));
  };
  document.addEventListener('keydown', (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || !/^[1-9]$/.test(e.key)) return;
    const t = e.target;
    const dialogs = Array.from(document.querySelectorAll('#model-box-edit'));
    const dialog = dialogs.find((d) => d.contains(t)) || (isText(t) ? null : dialogs[0]);
    if (!dialog || dialog.dataset.owlTyped) return;
    const field = dialog.querySelector(FIELD);
    if (!field) return;
    e.preventDefault();
    e.stopPropagation();
    field.blur();   // focusing the field shows the whole list (not the one filtered by its text)
    field.focus();
    requestAnimationFrame(() => pick(dialog, Number(e.key), 20));
  }, true);
  return [];
}"""


#: Installed once on page load: Enter / OK in the review dialog on a grey box accept its class.
REVIEW_ACCEPT_JS = """() => {
  if (window.__owlReviewAccept) return [];
  window.__owlReviewAccept = true;
  const GREY = '__GREY__', FIELD = "input[aria-label='Label']";
  const dialogOf = () => document.querySelector('#review-annotator #model-box-edit');
  // the class a grey box proposes, when the dialog still shows it grey
  const proposed = (dialog) => {
    const color = dialog.querySelector('input[type=color]');
    const field = dialog.querySelector(FIELD);
    if (!color || !field) return null;
    return color.value.toLowerCase() === GREY && field.value ? field.value : null;
  };
  const ok = (dialog) => Array.from(dialog.querySelectorAll('button'))
    .find((b) => b.textContent.trim() === 'OK');
  // pick `name` in the dialog's list (the click a person would make), then `done()`
  const pick = (dialog, name, done) => {
    if (dialog.dataset.owlPicking) { dialog.__owlDone = done || dialog.__owlDone; return; }
    dialog.dataset.owlPicking = '1';
    dialog.__owlDone = done;
    const field = dialog.querySelector(FIELD);
    field.blur();  // focusing the field again shows the whole list
    field.focus();
    const attempt = (frames) => {
      const item = Array.from(dialog.querySelectorAll('li[data-index]'))
        .find((li) => li.getAttribute('aria-label') === name);
      if (!item && frames > 0 && dialog.isConnected) {
        requestAnimationFrame(() => attempt(frames - 1));
        return;
      }
      if (item) item.dispatchEvent(new MouseEvent('mousedown', {bubbles: true, cancelable: true}));
      requestAnimationFrame(() => requestAnimationFrame(() => {
        delete dialog.dataset.owlPicking;
        const then = dialog.__owlDone;
        dialog.__owlDone = null;
        if (then && dialog.isConnected) then();
      }));
    };
    requestAnimationFrame(() => attempt(30));
  };
  // Enter on a grey proposal: pick its class first, then confirm
  document.addEventListener('keydown', (e) => {
    const dialog = dialogOf();
    if (!dialog || e.key !== 'Enter') return;
    const name = proposed(dialog);
    if (!name && !dialog.dataset.owlPicking) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    pick(dialog, name, () => { const b = ok(dialog); if (b) b.click(); });
  }, true);
  document.addEventListener('click', (e) => {
    const dialog = dialogOf();
    const button = dialog && e.target && e.target.closest ? e.target.closest('button') : null;
    if (!button || button !== ok(dialog) || !e.isTrusted) return;
    const name = proposed(dialog);
    if (!name && !dialog.dataset.owlPicking) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    pick(dialog, name, () => button.click());
  }, true);
  return [];
}""".replace("__GREY__", SUGGESTION_COLOR.lower())

#: On each change of the review annotator: a newly shown image starts in "Drag boxes" mode.
SELECT_MODE_JS = """(value) => {
  const root = document.getElementById('review-annotator');
  const url = value && value.image && value.image.url ? value.image.url : '';
  if (!root || !url || root.dataset.owlModeImage === url) return [];
  root.dataset.owlModeImage = url;
  const drag = (frames) => {
    const create = root.querySelector("button[aria-label='Create box']");
    const select = root.querySelector("button[aria-label='Drag boxes']");
    if (!create || !select) {
      if (frames > 0) requestAnimationFrame(() => drag(frames - 1));
      return;
    }
    if (!create.classList.contains('selected')) return;
    // the component focuses its canvas on a mode change, and a focus scrolls the page to the
    // review panel (2,000 px down on opening a project): keep the person where they are
    const x = window.scrollX, y = window.scrollY;
    select.click();
    const keep = (n) => {
      window.scrollTo(x, y);
      if (n > 0) requestAnimationFrame(() => keep(n - 1));
    };
    keep(3);
  };
  requestAnimationFrame(() => drag(60));
  return [];
}"""


def fit_canvas_js(elem_id: str, max_height: int = MAX_CANVAS_HEIGHT) -> str:
    """JS for the annotator `elem_id`'s change event: cap its canvas container's width so the
    image, shown whole at its own aspect ratio, is at most `max_height` CSS pixels tall (the
    natural size comes from loading the image URL once; later calls use the remembered size)."""
    return _FIT_CANVAS_JS.replace("__MAX__", str(int(max_height))).replace("__ID__", elem_id)


_FIT_CANVAS_JS = """(value) => {
  const MAX = __MAX__, root = document.getElementById('__ID__');
  if (!root) return [];
  const url = value && value.image && value.image.url ? value.image.url : '';
  root.dataset.owlFitImage = url;
  const sizes = window.__owlImageSizes || (window.__owlImageSizes = new Map());
  const fit = (size, frames) => {
    if (root.dataset.owlFitImage !== url) return;  // a newer image came meanwhile
    const wrap = root.querySelector('.canvas-container');
    if (!wrap) {
      if (frames > 0) requestAnimationFrame(() => fit(size, frames - 1));
      return;
    }
    wrap.style.maxWidth = size ? Math.floor(MAX * size[0] / size[1]) + 'px' : '';
    wrap.style.marginLeft = wrap.style.marginRight = 'auto';
  };
  if (!url) { fit(null, 0); return []; }
  if (sizes.has(url)) { fit(sizes.get(url), 60); return []; }
  const img = new Image();
  img.onload = () => {
    if (!img.naturalWidth || !img.naturalHeight) return;
    if (sizes.size > 2000) sizes.clear();
    sizes.set(url, [img.naturalWidth, img.naturalHeight]);
    fit(sizes.get(url), 60);
  };
  img.src = url;
  return [];
}"""


def install_annotator_scripts(demo: gr.Blocks, *annotators: Any) -> None:
    """Install the number keys and the review dialog's accept (on page load), the
    aspect-ratio fit (on each annotator's change: a new image, or an edit, which finds the
    image's size remembered) and the review annotator's select mode for each new image."""
    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    demo.load(None, None, None, js=ANNOTATOR_KEYS_JS, **quiet)
    demo.load(None, None, None, js=REVIEW_ACCEPT_JS, **quiet)
    for annotator in annotators:
        annotator.change(None, annotator, None, js=fit_canvas_js(annotator.elem_id), **quiet)
        if annotator.elem_id == "review-annotator":
            annotator.change(None, annotator, None, js=SELECT_MODE_JS, **quiet)
