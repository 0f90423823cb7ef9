"""The preview drawn in the browser: the server sends detections as numbers, the page draws them.

A `gr.HTML` component (`preview_view`) whose value is a plain dict (`PreviewImage` rows, see
`preview_value`): per image on the preview's page its picture URL (loaded once, then cached by
the browser), its size, and every detection scoring at least a low floor (`PREVIEW_FLOOR`) as
``[x0, y0, x1, y1, class_id, score]`` in image pixels. The page draws the boxes over the
pictures with SVG (class colours, "class score" labels, the example boxes of example images
dashed, negatives red) and applies the confidence slider and the "Show labels and scores"
toggle itself, so moving either sends nothing to the server; the per-class counts of the shown
page are counted in the browser too.

Why the floor is exact: NMS keeps a box only if no higher-scoring box overlaps it too much, so
whether a box at or above the confidence survives depends only on boxes at or above it; the
cut to `max_detections` keeps the best ones. Detections made at the floor and then filtered at
the confidence are therefore the detections made at the confidence (the negatives' spatial
suppression included: a negative only removes a lower-scoring box).

The page marks each redraw on the view's root (``.owl-pv``) with ``data-rev`` (a counter),
``data-confidence``, ``data-shown`` (boxes drawn on the large picture), ``data-selected``,
``data-images`` and ``data-waiting`` (images still being embedded), so tests and
`bench/studio_latency.py` can tell when new detections are on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

#: Detections scoring below this are not sent; the confidence slider is served by the page from
#: the floor up (a confidence below it asks the server again, on release).
PREVIEW_FLOOR = 0.25
#: Decimals sent per box coordinate (image pixels) and per score.
XY_DECIMALS = 1
SCORE_DECIMALS = 4


@dataclass(frozen=True)
class PreviewImage:
    """One picture of the preview page, as the page draws it.

    Attributes:
        name: the image's file name (caption).
        url: where the browser loads the picture (any size: boxes are in `size` pixels).
        size: (width, height) of the original image; boxes are in its pixels.
        boxes: detections, each (x0, y0, x1, y1, class_id, score), XYXY original pixels.
        prompts: the drawn example boxes of an example image, each (x0, y0, x1, y1, class_id,
            negative): shown dashed, negatives red, whatever the confidence.
        note: shown instead of counts (e.g. "embedding…").
    """

    name: str
    url: str
    size: tuple[int, int]
    boxes: Sequence[tuple[float, float, float, float, int, float]] = ()
    prompts: Sequence[tuple[float, float, float, float, int, bool]] = ()
    note: str = ""


@dataclass(frozen=True)
class PreviewPage:
    """What the preview shows: `images` of one page, the classes (names, colours), the
    server's confidence (the page starts from it), the floor the boxes were cut at, the
    selected image, and `rev`: a key that changes whenever anything shown changes."""

    images: Sequence[PreviewImage]
    classes: Sequence[str]
    colors: Sequence[str]
    confidence: float
    floor: float = PREVIEW_FLOOR
    selected: int = 0
    start: int = 0
    rev: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def box_rows(xyxy: Any, class_id: Any, confidence: Any) -> list[list[float]]:
    """Detections as JSON rows ``[x0, y0, x1, y1, class_id, score]`` (rounded), best first.

    Args:
        xyxy: (N, 4) XYXY boxes in image pixels.
        class_id: (N,) class ids.
        confidence: (N,) scores.
    """
    rows = []
    for (x0, y0, x1, y1), c, s in zip(_tolist(xyxy), _tolist(class_id), _tolist(confidence),
                                      strict=True):
        rows.append([round(float(x0), XY_DECIMALS), round(float(y0), XY_DECIMALS),
                     round(float(x1), XY_DECIMALS), round(float(y1), XY_DECIMALS), int(c),
                     round(float(s), SCORE_DECIMALS)])
    return rows


def _tolist(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def preview_value(page: PreviewPage) -> dict[str, Any]:
    """The view's value: plain JSON the page's script reads (see the module docstring)."""
    return {
        "rev": page.rev,
        "start": page.start,
        "selected": page.selected,
        "confidence": round(float(page.confidence), 4),
        "floor": round(float(page.floor), 4),
        "classes": [[n, c] for n, c in zip(page.classes, page.colors, strict=True)],
        "images": [{"name": im.name, "url": im.url, "w": int(im.size[0]), "h": int(im.size[1]),
                    "boxes": [list(b) for b in im.boxes],
                    "prompts": [[*map(float, p[:4]), int(p[4]), bool(p[5])] for p in im.prompts],
                    "note": im.note} for im in page.images],
        **page.extra,
    }


def visible(value: dict[str, Any], confidence: float) -> list[list[list[float]]]:
    """Per image of a view value, the boxes the page draws at `confidence` (the page's rule,
    for tests and for the server's own counts)."""
    return [[b for b in im["boxes"] if b[5] >= confidence] for im in value.get("images", [])]


HTML_TEMPLATE = '<div class="owl-pv" data-rev="0"></div>'

CSS_TEMPLATE = """
.owl-pv {display:flex; flex-direction:column; gap:6px; font-size:13px}
.owl-pv .empty {padding:40px 12px; text-align:center; color:var(--body-text-color-subdued);
                border:1px dashed var(--border-color-primary); border-radius:8px}
.owl-pv .stage {display:flex; justify-content:center; align-items:flex-start;
                background:var(--background-fill-secondary); border-radius:8px;
                min-height:120px; padding:4px}
.owl-pv .frame {position:relative; line-height:0; max-width:100%}
.owl-pv .frame img {width:100%; height:auto; display:block; user-select:none}
.owl-pv .frame svg {position:absolute; left:0; top:0; width:100%; height:100%;
                    overflow:visible; pointer-events:none}
.owl-pv .caption {display:flex; justify-content:space-between; gap:8px; flex-wrap:wrap}
.owl-pv .caption .name {font-weight:600; overflow:hidden; text-overflow:ellipsis;
                        white-space:nowrap}
.owl-pv .strip {display:flex; gap:6px; overflow-x:auto; padding-bottom:2px}
.owl-pv .thumb {flex:0 0 auto; cursor:pointer; border:2px solid transparent;
                border-radius:4px; padding:1px; background:none; line-height:0}
.owl-pv .thumb.sel {border-color:var(--color-accent)}
.owl-pv .thumb .frame {height:64px}
.owl-pv .thumb .frame img {height:64px; width:auto}
.owl-pv .count {display:inline-block; color:#fff; border-radius:4px; padding:0 6px;
                margin:0 2px; font-weight:600}
.owl-pv .note {color:var(--body-text-color-subdued)}
"""

#: Draws the value (see `preview_value`); the slider and labels toggle act here, no server call.
JS_ON_LOAD = r"""
const root = element.querySelector('.owl-pv');
let selected = 0, start = null, localConf = null, drawnKey = null, rev = 0, layoutKey = null;
const NEG = '#D50000';
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({'&': '&amp;', '<': '&lt;',
  '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const confidence = () => {
  const v = props.value || {};
  const c = localConf !== null ? localConf : Number(v.confidence || 0);
  return Number.isFinite(c) ? c : 0;
};
const labelsOn = () => {
  const box = document.querySelector('#show-labels input[type=checkbox]');
  return box ? box.checked : true;
};
function svgFor(im, v, conf, labels, big) {
  const colors = (v.classes || []).map((c) => c[1]);
  const names = (v.classes || []).map((c) => c[0]);
  const side = Math.max(im.w, im.h);
  const font = side / (big ? 42 : 30);
  const stroke = big ? 2 : 1.5;
  let out = '';
  let shown = 0;
  const boxes = im.boxes || [];
  for (let k = boxes.length - 1; k >= 0; k--) {  // the best box last: on top
    const [x0, y0, x1, y1, cid, score] = boxes[k];
    if (score < conf) continue;
    shown++;
    const col = colors[cid] || '#888';
    out += `<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" ` +
           `stroke="${col}" stroke-width="${stroke}" vector-effect="non-scaling-stroke"/>`;
    if (labels && big) {
      const text = `${names[cid] ?? cid} ${score.toFixed(2)}`;
      const w = text.length * font * 0.6 + font * 0.4;
      const ty = y0 - font * 1.25 < 0 ? y0 : y0 - font * 1.25;
      out += `<rect x="${x0}" y="${ty}" width="${w}" height="${font * 1.25}" fill="${col}"/>` +
             `<text x="${x0 + font * 0.2}" y="${ty + font * 0.98}" font-size="${font}" ` +
             `fill="#fff" font-family="sans-serif">${esc(text)}</text>`;
    }
  }
  for (const [x0, y0, x1, y1, cid, neg] of (im.prompts || [])) {
    const col = neg ? NEG : (colors[cid] || '#888');
    out += `<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" ` +
           `stroke="${col}" stroke-width="${stroke + 1}" stroke-dasharray="6 4" ` +
           `vector-effect="non-scaling-stroke" class="${neg ? 'neg' : 'pos'}"/>`;
    if (labels && big) {
      const text = (neg ? 'NOT ' : 'example ') + (names[cid] ?? cid);
      out += `<text x="${x0 + font * 0.2}" y="${y1 - font * 0.3}" font-size="${font}" ` +
             `fill="${col}" font-family="sans-serif" font-weight="700">${esc(text)}</text>`;
    }
  }
  return [`<svg viewBox="0 0 ${im.w} ${im.h}" preserveAspectRatio="none">${out}</svg>`, shown];
}
function counts(v, conf) {
  const n = (v.classes || []).map(() => 0);
  for (const im of v.images || []) for (const b of im.boxes || []) if (b[5] >= conf) n[b[4]]++;
  return n;
}
function frame(im, height) {
  const width = height ? `width:${(height * im.w / im.h).toFixed(1)}px` :
    `width:min(100%, calc(var(--owl-pv-height, 430px) * ${im.w} / ${im.h}))`;
  const alt = im.note ? `${im.name} · ${im.note}` : im.name;
  return `<div class="frame" style="${width}"><img src="${esc(im.url)}" alt="${esc(alt)}" ` +
         `draggable="false"/><span class="boxes"></span></div>`;
}
function layout(v) {
  const images = v.images || [];
  const key = JSON.stringify([images.map((im) => [im.url, im.note]), selected]);
  if (key === layoutKey) return;
  layoutKey = key;
  if (!images.length) {
    root.innerHTML = '<div class="empty">No images to preview yet: add query images ' +
                     '(step 2) and draw a box on an example (step 1).</div>';
    return;
  }
  const im = images[selected];
  let html = `<div class="stage">${frame(im, 0)}</div>` +
             '<div class="caption"><span class="name"></span><span class="page-counts"></span>' +
             '</div>';
  if (images.length > 1) {
    html += '<div class="strip">' + images.map((t, i) =>
      `<button type="button" class="thumb${i === selected ? ' sel' : ''}" data-i="${i}" ` +
      `title="${esc(t.name)}">${frame(t, 64)}</button>`).join('') + '</div>';
  }
  root.innerHTML = html;
}
function draw() {
  const v = props.value;
  if (!v || !Array.isArray(v.images)) {
    if (drawnKey !== 'none') { drawnKey = 'none'; layout({images: []}); bump(0, 0); }
    return;
  }
  if (v.start !== start) { start = v.start; selected = v.selected || 0; }
  selected = Math.max(0, Math.min(selected, v.images.length - 1));
  const conf = confidence(), labels = labelsOn();
  const key = JSON.stringify([v.rev, conf, labels, selected]);
  if (key === drawnKey) return;
  drawnKey = key;
  layout(v);
  if (!v.images.length) { bump(conf, 0); return; }
  const im = v.images[selected];
  const [big, shown] = svgFor(im, v, conf, labels, true);
  root.querySelector('.stage .boxes').innerHTML = big;
  root.querySelectorAll('.thumb').forEach((t) => {
    const i = Number(t.dataset.i);
    t.querySelector('.boxes').innerHTML = svgFor(v.images[i], v, conf, false, false)[0];
    t.title = `${v.images[i].name}: ${(v.images[i].boxes || []).filter(
      (b) => b[5] >= conf).length} detections`;
  });
  const names = (v.classes || []).map((c) => c[0]);
  const n = counts(v, conf);
  root.querySelector('.caption .name').textContent = im.note ? `${im.name} · ${im.note}` :
    `${im.name} · ${shown} detection${shown === 1 ? '' : 's'}`;
  root.querySelector('.caption .page-counts').innerHTML =
    `<span class="note">this page ≥ ${conf.toFixed(2)}:</span>` + names.map((name, i) =>
      `<span class="count" style="background:${v.classes[i][1]}">${esc(name)} ${n[i]}</span>`
    ).join('');
  bump(conf, shown);
}
function bump(conf, shown) {
  const images = (props.value && props.value.images) || [];
  root.dataset.waiting = String(images.filter((im) => im.note === 'embedding…').length);
  root.dataset.images = String(images.length);
  root.dataset.confidence = conf.toFixed(4);
  root.dataset.shown = String(shown);
  root.dataset.selected = String(selected);
  root.dataset.rev = String(++rev);
}
root.addEventListener('click', (e) => {
  const t = e.target.closest('.thumb');
  if (!t) return;
  selected = Number(t.dataset.i);
  draw();
  const im = (props.value.images || [])[selected];
  trigger('select', {index: selected, value: im ? im.name : null, selected: true});
});
document.addEventListener('input', (e) => {
  const t = e.target;
  if (!t || !t.closest || !t.closest('#confidence')) return;
  const c = parseFloat(t.value);
  if (Number.isFinite(c)) { localConf = c; draw(); }
}, true);
document.addEventListener('change', (e) => {
  if (e.target && e.target.closest && e.target.closest('#show-labels')) draw();
}, true);
watch('value', () => { localConf = null; draw(); });
draw();
"""


def picture_url(block: gr.blocks.Block, path: str) -> str:
    """A URL the page can load `path` from: the file copied once into Gradio's cache (named by
    its content; files there are served), relative to the page."""
    cached = block.move_resource_to_block_cache(path)
    return f"gradio_api/file={cached}"


def preview_view(**kwargs: Any) -> gr.HTML:
    """The preview component (a `gr.HTML` drawing `preview_value` dicts); `kwargs` go to
    `gr.HTML` (elem_id, label, ...). Its ``select`` event carries the clicked image's index."""
    return gr.HTML(None, html_template=HTML_TEMPLATE, css_template=CSS_TEMPLATE,
                   js_on_load=JS_ON_LOAD, apply_default_css=False, **kwargs)
