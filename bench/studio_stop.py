"""How long `python app.py` takes to stop (Ctrl+C) with studio tabs open (issue 16: it was
about 30 s; the target is 5 s). Starts the app on the tiny random model, opens TABS tabs in
headless Chromium, sends SIGINT and prints the seconds until the process ended, with the
times of uvicorn's shutdown steps.

    python bench/studio_stop.py [--tabs 2] [--port 7861]
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("Waiting for connections", "timeout graceful shutdown exceeded",
         "Application shutdown complete")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tabs", type=int, default=2)
    ap.add_argument("--port", type=int, default=7861)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="owl-stop-"))
    log = work / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--random-weights", "tiny", "--port", str(args.port),
         "--projects-dir", str(work / "projects"), "--random-weights-dir", str(work / "w")],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", args.port), 1).close()
            break
        except OSError:
            time.sleep(1)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox"])
        for _ in range(args.tabs):
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"http://127.0.0.1:{args.port}/")
            page.wait_for_selector("#annotator", timeout=120_000)
        time.sleep(3)
        marks: dict[str, float] = {}
        start = time.time()

        def watch() -> None:
            while proc.poll() is None:
                text = log.read_text(errors="replace")
                for step in STEPS:
                    if step in text and step not in marks:
                        marks[step] = round(time.time() - start, 1)
                time.sleep(0.1)

        threading.Thread(target=watch, daemon=True).start()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            print("still running after 120 s: killed")
        took = time.time() - start
        browser.close()
    print(f"stop: {took:.1f} s with {args.tabs} tab(s) open (exit code {proc.returncode}); "
          f"steps: {marks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
