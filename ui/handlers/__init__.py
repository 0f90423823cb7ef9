"""Event handlers of the studio page, one module per area, owned by `Studio`.

* `studio`: `Studio` (sessions + the areas below; builds each area with what it needs).
* `images`: uploads, bundled samples, which example the annotator shows.
* `embedding`: the background embedding step (batches, progress, no session lock held).
* `boxes`: the example annotator's edits.
* `classes`: add / rename / remove classes.
* `preview`: detections, counts and box diagnostics (the edit -> preview path).
* `project`: example projects, `.pt` downloads and imports, detection export.
* `api`: the named endpoints (infer, infer_pt, export).
* `views` (component values from the state) and `common` (what every area shares: `Area`,
  `AreaContext`, `StudioConfig`, `Components`, `tab_id`, the engine-error wrapper, readers).

Each handler finds its session by ``request.session_hash`` and works under that session's lock
(the embedding step only briefly); handlers return ``{component: value}`` dicts, so anything
not named keeps its value. Engine errors (ValueError / RuntimeError) become `gr.Error` with the
engine's message.
"""

from ui.handlers.preview import DIAG_HEADERS
from ui.handlers.studio import Components, Studio, StudioConfig

__all__ = ["DIAG_HEADERS", "Components", "Studio", "StudioConfig"]
