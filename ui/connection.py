"""The page while the server is away: "Reconnecting", never an empty project (issue 16).

A page whose server stopped still shows the project, and a page loading shows the layout's
defaults ("my-project", class "object") until the server answers with the tab's project: both
look like lost work. The page installs `CONNECTION_JS` once: it covers the studio with a notice
until the tab's project is on screen (``SET_URL_JS`` in `ui.layout` marks it), and asks the
server every `HEARTBEAT_MS` for its app id (Gradio's ``/gradio_api/app_id``: a few bytes, no
queue). While the server does not answer the notice says "Reconnecting"; once a server answers
with another app id (it was restarted) the page reloads, and the address (``?project=``) opens
the same project at the person's place (`ui.session.TabSessions` keeps places on disk).
"""

from __future__ import annotations

import json
from typing import Any

#: Milliseconds between two questions to the server.
HEARTBEAT_MS = 2000
#: Milliseconds without an answer after which the server counts as away.
ANSWER_WAIT_MS = 8000

OPENING_TEXT = "Opening your project…"
RECONNECTING_TEXT = "Reconnecting to the server…"
RECONNECTING_NOTE = ("Your project is saved on the server. This page opens it again, where you "
                     "were, as soon as the server is back.")

CONNECTION_JS = """() => {
  if (window.__owlConnection) return [];
  const HEARTBEAT = __HEARTBEAT__, WAIT = __WAIT__;
  const style = document.createElement('style');
  style.textContent = `
    #owl-connection { position: fixed; inset: 0; z-index: 10000; display: flex;
      align-items: center; justify-content: center; background: rgba(255,255,255,0.94);
      font: 16px/1.5 system-ui, sans-serif; color: #222; }
    #owl-connection[hidden] { display: none; }
    #owl-connection .box { max-width: 32em; padding: 1.5em 2em; text-align: center;
      border: 1px solid #ccc; border-radius: 8px; background: #fff;
      box-shadow: 0 2px 12px rgba(0,0,0,0.12); }
    #owl-connection .title { font-size: 1.25em; font-weight: 600; }
    #owl-connection .spin { display: inline-block; width: 0.9em; height: 0.9em;
      margin-right: 0.5em; border: 2px solid #999; border-top-color: transparent;
      border-radius: 50%; animation: owl-spin 1s linear infinite; vertical-align: -0.1em; }
    @keyframes owl-spin { to { transform: rotate(360deg); } }`;
  document.head.appendChild(style);
  const cover = document.createElement('div');
  cover.id = 'owl-connection';
  cover.setAttribute('role', 'status');
  cover.innerHTML = "<div class='box'><div class='title'><span class='spin'></span>" +
    "<span class='what'></span></div><div class='note'></div></div>";
  document.body.appendChild(cover);
  const state = {away: false, appId: (window.gradio_config || {}).app_id ?? null};
  window.__owlConnection = state;
  const show = (what, note) => {
    cover.querySelector('.what').textContent = what;
    cover.querySelector('.note').textContent = note;
    cover.dataset.state = state.away ? 'reconnecting' : 'opening';
    cover.hidden = false;
  };
  const update = () => {
    if (state.away) show(__RECONNECTING__, __NOTE__);
    else if (!document.body.dataset.owlProject) show(__OPENING__, '');
    else { cover.hidden = true; cover.dataset.state = 'ready'; }
  };
  new MutationObserver(update).observe(document.body,
    {attributes: true, attributeFilter: ['data-owl-project']});
  const base = window.location.href.split(/[?#]/)[0].replace(/[^/]*$/, '');
  const ask = async () => {
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), WAIT);
    try {
      const answer = await fetch(base + 'gradio_api/app_id',
                                 {cache: 'no-store', signal: stop.signal});
      if (!answer.ok) throw new Error(String(answer.status));
      const id = (await answer.json()).app_id;
      if (state.appId === null) state.appId = id;
      if (id !== state.appId) {  // a restarted server: open the page again (same address)
        state.away = true; update(); window.location.reload(); return;
      }
      state.away = false;
    } catch (e) {
      state.away = true;
    } finally {
      clearTimeout(timer);
    }
    update();
    setTimeout(ask, HEARTBEAT);
  };
  update();
  setTimeout(ask, HEARTBEAT);
  return [];
}"""
for _key, _value in (("__HEARTBEAT__", HEARTBEAT_MS), ("__WAIT__", ANSWER_WAIT_MS),
                     ("__RECONNECTING__", RECONNECTING_TEXT), ("__NOTE__", RECONNECTING_NOTE),
                     ("__OPENING__", OPENING_TEXT)):
    CONNECTION_JS = CONNECTION_JS.replace(_key, json.dumps(_value))


def install(demo: Any, **quiet: Any) -> None:
    """Install the connection notice on every page load of `demo` (call inside its Blocks)."""
    demo.load(None, None, None, js=CONNECTION_JS, **quiet)
