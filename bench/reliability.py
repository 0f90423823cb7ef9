"""Reliability bench: the real server (studio + REST API) attacked the way issue 11 did it.

    python bench/reliability.py                      # full run (about 15 minutes, tiny model)
    python bench/reliability.py --quick --json out.json          # smoke test (tests/)
    python bench/reliability.py --update-readme      # write the README "Reliability" section

It starts ``python app.py`` itself on 127.0.0.1 (random "tiny" weights unless ``--model-dir``;
a second server with ``--allow-url-images`` for the SSRF cases), then

1. load: N clients x M requests at once, mixed: gradio_client sessions (``/infer``,
   ``/infer_pt``, ``/export``) and REST (``POST /owlv2/infer`` with base64 images, two classes
   and a negative; ``POST /infer`` with an uploaded ``.pt``). Every client has its own class
   names, image sizes and file names, so an answer holding another client's class, size or
   file is a cross-session leak. Reported: failures, leaks, req/s, p50 / p95 per kind.
2. memory: the server's RSS (``/proc``) while 1,000 distinct images go through it (half REST,
   half gradio ``/infer``) with a small ``--cache-mb`` budget, so the cache must evict;
   peak RSS growth vs the budget.
3. hostile inputs, each sent to the running server: status code (or gradio error) and the
   first line of the message; any 5xx, uncaught error, timeout, server death, code run by a
   payload, file written outside the server's folders, or hostile input accepted is FAIL.

4. projects: hostile project zips, each imported in a fresh process (outcome, time, peak RSS);
5. journal: the kill -9 loss window at 3,000 and 50,000 labels, full rewrite vs the journal.
   (4 and 5 live in ``bench/reliability_projects.py``.)

Everything is bounded: requests per client, per-request timeout, whole-run timeout (a watchdog
stops the servers and exits 3), only 127.0.0.1. Exit status 1 when any check failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import select
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from owl_core import limits  # noqa: E402  (after the sys.path line)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reliability_projects  # noqa: E402  (project zips and kill -9: their own module)

APP = ROOT / "app.py"
HOST = "127.0.0.1"
MB = 1024**2
KINDS = ("rest_owlv2", "gr_infer", "rest_infer_pt", "gr_infer_pt", "gr_export")
SETTINGS = {"confidence": 0.5, "iou_threshold": 0.3, "max_detections": 20,
            "score_mode": "reference"}
SECTION = "Reliability"
HEAVY_CLASSES, HEAVY_IMAGES = 200, 32  # the expensive request of the starvation rows
RAW_TIMEOUT_S = 20.0  # hand-made HTTP requests (lying Content-Length, streamed bodies)
BODY_GIVE_UP_S = 150.0  # a trickled body: over the server's max_body_seconds (60 s)
NEXT_SECTION = "Example assets"


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (full or --quick)."""

    clients: int
    requests: int
    images: int
    images_per_request: int
    class_name_mb: int
    many_classes: int
    bomb_side: int
    zip_bomb_mb: int
    timeout_s: float
    request_timeout_s: float


FULL = Plan(clients=8, requests=50, images=1000, images_per_request=20, class_name_mb=50,
            many_classes=5000, bomb_side=30000, zip_bomb_mb=256, timeout_s=2400,
            request_timeout_s=120)
QUICK = Plan(clients=2, requests=5, images=20, images_per_request=5, class_name_mb=5,
             many_classes=5000, bomb_side=30000, zip_bomb_mb=64, timeout_s=420,
             request_timeout_s=120)


# ---------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def app_flags() -> str:
    """`python app.py --help`, to use only the flags this checkout has."""
    out = subprocess.run([sys.executable, str(APP), "--help"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, check=False)
    return out.stdout


class Server:
    """``python app.py`` in a subprocess on 127.0.0.1 (started and stopped by us, by pid)."""

    def __init__(self, work: Path, name: str, model_args: list[str], extra: list[str],
                 help_text: str, cache_mb: int) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.folder = work / name
        self.gradio_tmp = self.folder / "gradio"
        self.gradio_tmp.mkdir(parents=True)
        args = [sys.executable, str(APP), "--host", HOST, "--port", str(self.port), *model_args]
        if "--projects-dir" in help_text:
            args += ["--projects-dir", str(self.folder / "projects")]
        if "--no-disk-cache" in help_text:
            args += ["--no-disk-cache"]
        if "--cache-mb" in help_text:
            args += ["--cache-mb", str(cache_mb)]
        self.cache_flag = "--cache-mb" in help_text
        self.command = args + extra
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.gradio_tmp), "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
        self.log_path = self.folder / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.rss = RssSampler(self.proc.pid)

    def wait_ready(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            try:
                if httpx.get(self.url + "/", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server {self.name} not ready after {timeout_s:.0f} s:\n"
                           + self.log_tail())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_mb(self) -> float | None:
        return proc_status_mb(self.proc.pid, "VmRSS")


    def stop(self) -> None:
        self.rss.stop()
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


class RssSampler:
    """The largest RSS of a process since `mark()`, sampled every `interval_s` on a thread
    (the kernel's own peak, VmHWM, only resets down to the current RSS)."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self._peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = proc_status_mb(self.pid, "VmRSS")
            if rss is None:
                return
            with self._lock:
                self._peak = max(self._peak, rss)

    def mark(self) -> float | None:
        """Start a new window; the RSS now."""
        rss = proc_status_mb(self.pid, "VmRSS")
        with self._lock:
            self._peak = rss or 0.0
        return rss

    def peak(self) -> float | None:
        rss = proc_status_mb(self.pid, "VmRSS")
        with self._lock:
            self._peak = max(self._peak, rss or 0.0)
            return self._peak or None

    def stop(self) -> None:
        self._stop.set()


def proc_status_mb(pid: int, key: str) -> float | None:
    """A ``/proc/<pid>/status`` memory line (kB) in MiB; None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------------------- test data
def noise_png(width: int, height: int, seed: int) -> bytes:
    """A distinct PNG (smooth random blobs, so it compresses a little)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class ClientData:
    """One client's own classes, images, sizes and file names (nothing shared with others)."""

    index: int
    folder: Path
    classes: tuple[str, str]
    example: Path
    example_size: tuple[int, int]
    queries: list[Path]
    query_sizes: list[tuple[int, int]]
    boxes: list[dict]

    @classmethod
    def make(cls, index: int, work: Path) -> ClientData:
        folder = work / f"client{index}"
        folder.mkdir(parents=True)
        size = (160 + 8 * index, 120 + 6 * index)
        example = folder / f"client{index}-example.png"
        example.write_bytes(noise_png(*size, seed=1000 + index))
        queries, sizes = [], []
        for j in range(2):  # widths 96 + 16 i + j are distinct across clients and images
            q_size = (96 + 16 * index + j, 64 + 2 * index + j)
            path = folder / f"client{index}-query{j}.png"
            path.write_bytes(noise_png(*q_size, seed=2000 + 10 * index + j))
            queries.append(path)
            sizes.append(q_size)
        names = (f"client{index}-cat", f"client{index}-dog")
        w, h = size
        boxes = [  # two positives per class and one negative, inside the image
            {"x": w * 0.25, "y": h * 0.3, "w": w * 0.2, "h": h * 0.25, "cls": names[0],
             "negative": False},
            {"x": w * 0.7, "y": h * 0.3, "w": w * 0.25, "h": h * 0.2, "cls": names[0],
             "negative": False},
            {"x": w * 0.3, "y": h * 0.75, "w": w * 0.15, "h": h * 0.3, "cls": names[1],
             "negative": False},
            {"x": w * 0.75, "y": h * 0.75, "w": w * 0.2, "h": h * 0.2, "cls": names[1],
             "negative": False},
            {"x": w * 0.5, "y": h * 0.5, "w": w * 0.15, "h": h * 0.15, "cls": names[0],
             "negative": True},
        ]
        return cls(index, folder, names, example, size, queries, sizes, boxes)

    def training_json(self, image: Any) -> str:
        return json.dumps([{"image": image, "boxes": self.boxes}])

    def owlv2_body(self) -> dict:
        return {"image": [{"type": "base64", "value": b64(p.read_bytes())} for p in self.queries],
                "training_data": [{"image": {"type": "base64",
                                             "value": b64(self.example.read_bytes())},
                                   "boxes": self.boxes}],
                **SETTINGS}


@dataclass(frozen=True)
class Expect:
    """What one client's answer may hold."""

    classes: frozenset[str]
    sizes: tuple[tuple[int, int], ...]
    files: tuple[str, ...] = ()


def check_answer(kind: str, answer: Any, expect: Expect) -> list[str]:
    """Problems with one answer: wrong shape, or another client's class / image size / file
    (a cross-session leak). Empty when the answer is this client's own."""
    problems: list[str] = []
    if kind == "gr_export":
        names = answer if isinstance(answer, (list, tuple)) else []
        foreign = sorted(set(names) - expect.classes)
        if foreign:
            problems.append(f"leak: exported classes {foreign[:3]}")
        if not names:
            problems.append("export holds no classes")
        return problems
    if kind.startswith("gr_"):
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            return [f"unexpected answer {str(answer)[:80]!r}"]
        foreign = sorted(set(answer.get("classes", [])) - expect.classes)
        if foreign:
            problems.append(f"leak: classes {foreign[:3]}")
        results = answer["results"]
        files = tuple(r.get("file") for r in results)
        if expect.files and files != expect.files:
            problems.append(f"leak: files {files} (sent {expect.files})")
    else:
        results = answer if isinstance(answer, list) else [answer]
        if not all(isinstance(r, dict) for r in results):
            return [f"unexpected answer {str(answer)[:80]!r}"]
    sizes = tuple((r.get("image", {}).get("width"), r.get("image", {}).get("height"))
                  for r in results)
    if sizes != expect.sizes:
        problems.append(f"leak: image sizes {sizes} (sent {expect.sizes})")
    found = {p.get("class") for r in results for p in r.get("predictions", [])}
    foreign = sorted(str(c) for c in found - expect.classes)
    if foreign:
        problems.append(f"leak: predicted classes {foreign[:3]}")
    return problems


# ---------------------------------------------------------------------------- load test
@dataclass
class Outcome:
    kind: str
    client: int
    seconds: float
    ok: bool
    problem: str = ""


def gradio_client(url: str, folder: Path) -> Any:
    from gradio_client import Client

    folder.mkdir(parents=True, exist_ok=True)
    return Client(url + "/", verbose=False, download_files=str(folder),
                  analytics_enabled=False)


def first_line(text: Any, limit: int = 110) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


class LoadClient:
    """One client: its own gradio session and REST connection, its own data."""

    def __init__(self, data: ClientData, url: str, timeout_s: float) -> None:
        self.data = data
        self.url = url
        self.timeout_s = timeout_s
        self.gr: Any = None
        # a pooled connection idle past uvicorn's keep-alive (5 s: the client was busy with
        # its Gradio calls) may be closed by the server as the next request goes out (a reset,
        # not the server's answer): never reuse one idle that long
        self.http = httpx.Client(base_url=url, timeout=timeout_s,
                                 limits=httpx.Limits(keepalive_expiry=2.0))
        self.pt: Path | None = None
        self.body = data.owlv2_body()

    def close(self) -> None:
        self.http.close()

    def gradio_call(self, api_name: str, **kwargs: Any) -> Any:
        from gradio_client import handle_file

        if self.gr is None:
            self.gr = gradio_client(self.url, self.data.folder / "downloads")
        files = {k: ([handle_file(str(p)) for p in v] if isinstance(v, list)
                     else handle_file(str(v)) if isinstance(v, Path) else v)
                 for k, v in kwargs.items()}
        return self.gr.submit(api_name=api_name, **files).result(timeout=self.timeout_s)

    def call(self, kind: str) -> tuple[Any, Expect]:
        d = self.data
        own = Expect(frozenset(d.classes), tuple(d.query_sizes))
        files = tuple(p.name for p in d.queries)
        if kind == "rest_owlv2":
            response = self.http.post("/owlv2/infer", json=self.body)
            return _json_or_raise(response), own
        if kind == "rest_infer_pt":
            upload = [("images", (p.name, p.read_bytes(), "image/png")) for p in d.queries]
            upload.append(("weights_file", ("prompts.pt", self._pt().read_bytes(),
                                            "application/octet-stream")))
            response = self.http.post("/infer", files=upload,
                                      data={k: str(v) for k, v in SETTINGS.items()})
            return _json_or_raise(response), own
        if kind == "gr_infer":
            answer = self.gradio_call("/infer", training_data=d.training_json(d.example.name),
                              example_images=[d.example], query_images=list(d.queries),
                              **SETTINGS)
            return answer, Expect(own.classes, own.sizes, files)
        if kind == "gr_infer_pt":
            answer = self.gradio_call("/infer_pt", pt_file=self._pt(), query_images=list(d.queries),
                              **SETTINGS)
            return answer, Expect(own.classes, own.sizes, files)
        if kind == "gr_export":  # the .pt's path; `verify` reads its class names
            return self._export(), own
        raise ValueError(kind)

    @staticmethod
    def verify(kind: str, answer: Any, expect: Expect) -> list[str]:
        """`check_answer`, after reading an exported `.pt` (outside the timed call)."""
        if kind == "gr_export":
            answer = pt_class_names(Path(answer))
        return check_answer(kind, answer, expect)

    def _export(self) -> Path:
        d = self.data
        path = self.gradio_call("/export", training_data=d.training_json(d.example.name),
                        example_images=[d.example], name=f"client{d.index}", small=False)
        return Path(path)

    def _pt(self) -> Path:
        if self.pt is None:
            self.pt = self._export()
        return self.pt


def _json_or_raise(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code}: {first_line(response.text)}")
    return response.json()


def pt_class_names(path: Path) -> list[str]:
    from owl_core.engine.prompt_file import load_pt  # imported by main(), before any timing

    return list(load_pt(path).exemplars.class_names)


def run_load(server: Server, work: Path, plan: Plan, deadline: float) -> dict[str, Any]:
    """`plan.clients` threads x `plan.requests` requests, kinds in turn (offset per client)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    clients = [LoadClient(ClientData.make(i, work / "load"), server.url, plan.request_timeout_s)
               for i in range(plan.clients)]

    ready = threading.Barrier(plan.clients + 1)
    setup_errors: list[str] = []

    def worker(client: LoadClient) -> None:
        try:  # untimed: the gradio session and this client's own .pt
            client._pt()
        except Exception as exc:  # noqa: BLE001
            setup_errors.append(f"client {client.data.index} setup: {first_line(exc)}")
        finally:
            try:
                ready.wait(timeout=max(1.0, deadline - time.monotonic()))
            except threading.BrokenBarrierError:
                pass
        for n in range(plan.requests):
            if time.monotonic() > deadline or not server.alive():
                return
            kind = KINDS[(n + client.data.index) % len(KINDS)]
            start = time.perf_counter()
            try:
                answer, expect = client.call(kind)
                seconds = time.perf_counter() - start
                problems = client.verify(kind, answer, expect)
            except Exception as exc:  # noqa: BLE001  (every failure is a result here)
                seconds = time.perf_counter() - start
                problems = [f"{type(exc).__name__}: {first_line(exc)}"]
            with lock:
                outcomes.append(Outcome(kind, client.data.index, seconds, not problems,
                                        "; ".join(problems)))

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=max(1.0, deadline - time.monotonic()))
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    wall = time.perf_counter() - start
    for c in clients:
        c.close()
    summary = summarize_load(outcomes, wall, plan, server.alive())
    summary["problems"] = setup_errors + summary["problems"]
    summary["failures"] += len(setup_errors)
    return summary


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def summarize_load(outcomes: list[Outcome], wall: float, plan: Plan,
                   alive: bool) -> dict[str, Any]:
    per_kind = {}
    for kind in KINDS:
        rows = [o for o in outcomes if o.kind == kind]
        times = [o.seconds for o in rows if o.ok]
        per_kind[kind] = {
            "requests": len(rows), "failures": sum(not o.ok for o in rows),
            "leaks": sum("leak:" in o.problem for o in rows),
            "p50_ms": None if not times else round(1000 * percentile(times, 50), 1),
            "p95_ms": None if not times else round(1000 * percentile(times, 95), 1)}
    problems = [f"client {o.client} {o.kind}: {o.problem}" for o in outcomes if not o.ok]
    return {"clients": plan.clients, "requests_per_client": plan.requests,
            "planned": plan.clients * plan.requests, "done": len(outcomes),
            "failures": sum(not o.ok for o in outcomes),
            "leaks": sum("leak:" in o.problem for o in outcomes),
            "wall_s": round(wall, 2),
            "requests_per_s": round(len(outcomes) / wall, 2) if wall > 0 else None,
            "p50_ms": round(1000 * (percentile([o.seconds for o in outcomes], 50) or 0), 1),
            "p95_ms": round(1000 * (percentile([o.seconds for o in outcomes], 95) or 0), 1),
            "per_kind": per_kind, "problems": problems[:20], "server_alive": alive}


# ---------------------------------------------------------------------------- memory
def run_memory(server: Server, work: Path, plan: Plan, cache_mb: int,
               deadline: float) -> dict[str, Any]:
    """`plan.images` distinct images through one server in requests of
    `plan.images_per_request`: the first half by REST, the second by gradio ``/infer`` (so the
    growth of each path shows); RSS after every request, peak from a sampler thread."""
    data = ClientData.make(99, work / "memory")
    client = LoadClient(data, server.url, plan.request_timeout_s)
    folder = work / "memory" / "images"
    folder.mkdir(parents=True)
    for kind in ("rest_owlv2", "gr_infer"):  # warm-up: first-call allocations are not growth
        try:
            client.call(kind)
        except Exception as exc:  # noqa: BLE001
            print(f"memory warm-up {kind} failed: {first_line(exc)}", file=sys.stderr)
    baseline = server.rss.mark()
    samples: list[tuple[int, float]] = []
    sent = failures = 0
    errors: list[str] = []
    per = plan.images_per_request
    request = 0
    half = (plan.images + 1) // 2
    rss_at_half = None
    while sent < plan.images and time.monotonic() < deadline and server.alive():
        via_rest = sent < half
        count = min(per, (half if via_rest else plan.images) - sent)
        sizes = [(120 + (sent + k) % 40, 90 + (sent + k) % 30) for k in range(count)]
        blobs = [noise_png(w, h, seed=10_000 + sent + k) for k, (w, h) in enumerate(sizes)]
        try:
            if via_rest:
                body = {**data.owlv2_body(),
                        "image": [{"type": "base64", "value": b64(b)} for b in blobs]}
                answer = _json_or_raise(client.http.post("/owlv2/infer", json=body))
                problems = check_answer("rest_owlv2", answer,
                                        Expect(frozenset(data.classes), tuple(sizes)))
            else:
                paths = []
                for k, blob in enumerate(blobs):
                    path = folder / f"m{sent + k}.png"
                    path.write_bytes(blob)
                    paths.append(path)
                answer = client.gradio_call("/infer", training_data=data.training_json(
                    data.example.name), example_images=[data.example], query_images=paths,
                    **SETTINGS)
                problems = check_answer("gr_infer", answer, Expect(
                    frozenset(data.classes), tuple(sizes), tuple(p.name for p in paths)))
                for path in paths:
                    path.unlink()
        except Exception as exc:  # noqa: BLE001
            problems = [f"{type(exc).__name__}: {first_line(exc)}"]
        failures += bool(problems)
        errors.extend(problems[:1])
        sent += count
        request += 1
        rss = server.rss_mb()
        if rss is not None:
            samples.append((sent, round(rss, 1)))
            if sent == half:
                rss_at_half = rss
    client.close()
    peak = server.rss.peak()
    rss_values = [r for _, r in samples]
    top = max([*rss_values, peak or 0.0]) if rss_values else peak
    growth = None if top is None or baseline is None else round(top - baseline, 1)
    every = max(1, len(samples) // 10)
    return {"images": sent, "requests": request, "failures": failures,
            "errors": errors[:5], "cache_mb": cache_mb if server.cache_flag else None,
            "baseline_rss_mb": None if baseline is None else round(baseline, 1),
            "max_rss_mb": None if top is None else round(top, 1),
            "final_rss_mb": rss_values[-1] if rss_values else None,
            "growth_mb": growth,
            "growth_rest_half_mb": _round(None if rss_at_half is None or baseline is None
                                          else rss_at_half - baseline),
            "growth_gradio_half_mb": _round(None if rss_at_half is None or not rss_values
                                            else rss_values[-1] - rss_at_half),
            "growth_over_budget_mb": None if growth is None or not server.cache_flag
            else round(growth - cache_mb, 1),
            "samples": samples[::every] + samples[-1:], "server_alive": server.alive()}


# ---------------------------------------------------------------------------- hostile inputs
def pickle_pt(marker: Path) -> bytes:
    """A torch-format `.pt` whose unpickling would create `marker` (code run = FAIL)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    buffer = io.BytesIO()
    torch.save({"huggingface_id": "google/owlv2-base-patch16-ensemble", "class_names": ["x"],
                "train_data_dict": Payload(), "image_embeds": {}}, buffer)
    return buffer.getvalue()


def zip_bomb_pt(folder: Path, megabytes: int) -> Path:
    """A valid `.pt` holding a `megabytes` MiB tensor of zeros, its storage deflated: a few
    hundred KiB on disk that unpack to the full size."""
    import torch

    rows = megabytes * MB // (512 * 4)
    plain = folder / "plain.pt"
    torch.save({"huggingface_id": "google/owlv2-base-patch16-ensemble",
                "roboflow_id": "owlv2/bomb", "class_names": ["bomb"],
                "train_data_dict": {"bomb": {"positive": torch.zeros(rows, 512),
                                             "negative": None}},
                "image_embeds": {}}, plain)
    bomb = folder / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            method = zipfile.ZIP_DEFLATED if info.file_size > MB else zipfile.ZIP_STORED
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.compress_type = method
            with src.open(info) as reader, dst.open(out, "w", force_zip64=True) as writer:
                shutil.copyfileobj(reader, writer, MB)
    plain.unlink()
    return bomb


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side zeros (tiny file; 3 x side^2 bytes as RGB)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    block = row * 256
    parts = [packer.compress(block) for _ in range(side // 256)]
    parts.append(packer.compress(row * (side % 256)))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


@dataclass
class Case:
    """One hostile input: `send` returns (status, message); `expect` "refuse" or "accept"."""

    name: str
    target: str
    send: Callable[[], tuple[str, str]]
    expect: str = "refuse"
    check: Callable[[], str] | None = None  # a side effect that must not happen ("" = none)
    want: str = ""  # a refusal must say this (e.g. that a pickle needs code), case-insensitive


@dataclass
class Row:
    name: str
    target: str
    status: str
    message: str
    verdict: str
    seconds: float
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None


def http_send(response: httpx.Response) -> tuple[str, str]:
    """(status, message): the error's message, or a summary of detections when answered."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, (dict, list)):
        answers = body if isinstance(body, list) else [body]
        if all(isinstance(a, dict) and "predictions" in a for a in answers):
            found = sum(len(a["predictions"]) for a in answers)
            return str(response.status_code), (f"answered: {len(answers)} image(s), "
                                               f"{found} detections")
    message = body.get("message") or body.get("detail") if isinstance(body, dict) else None
    return str(response.status_code), first_line(message or response.text)


def raw_request(port: int, head: str, body_chunks: Iterator[bytes] | None,
                timeout_s: float) -> tuple[str, str]:
    """Send a hand-made HTTP request over a socket (lying Content-Length, streamed bodies);
    the status and message of whatever the server answers, even mid-upload."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for part in body_chunks or ():
                sock.sendall(part)
        except OSError:  # the server stopped reading (or closed): its answer is what counts
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 65536:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
                if b"\r\n\r\n" in data:
                    head_end = data.index(b"\r\n\r\n") + 4
                    length = _content_length(data[:head_end])
                    if length is not None and len(data) >= head_end + length:
                        break
        except OSError:  # timeout or reset: judged by what arrived
            pass
    if not data:
        return "no answer", f"no reply within {timeout_s:.0f} s (or the connection was closed)"
    status_line, _, rest = data.partition(b"\r\n")
    parts = status_line.split()
    status = parts[1].decode() if len(parts) > 1 else "?"
    body = rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
    try:
        body = json.loads(body).get("message") or json.loads(body).get("detail") or body
    except (ValueError, AttributeError):
        pass
    return status, first_line(body)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            try:
                return int(line.split(b":", 1)[1])
            except ValueError:
                return None
    return None


def streamed(total: int, chunk: int = MB) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = min(chunk, total - sent)
        yield b"\x00" * part
        sent += part


class Hostile:
    """Builds the hostile cases against one server (and the URL-allowing one)."""

    def __init__(self, server: Server, url_server: Server | None, work: Path, plan: Plan,
                 data: ClientData) -> None:
        self.server = server
        self.url_server = url_server
        self.folder = work / "hostile"
        self.folder.mkdir(parents=True)
        self.plan = plan
        self.data = data
        self.timeout = plan.request_timeout_s
        self.http = httpx.Client(base_url=server.url, timeout=self.timeout)
        self.gr: Any = None
        self.marker = self.folder / "pickle-code-ran"
        self.outside = self.folder / "outside"  # path-traversal targets point in here
        self.guarded: Server | None = None  # the server with --users and --rest-key (web)

    def close(self) -> None:
        self.http.close()

    # ---- senders
    def gradio(self, api_name: str, **kwargs: Any) -> tuple[str, str]:
        status, message, _ = self.gradio_answer(api_name, **kwargs)
        return status, message

    def gradio_answer(self, api_name: str, session: Any = None,
                      **kwargs: Any) -> tuple[str, str, Any]:
        """(status, first line of the message, the answer itself when there is one); on this
        object's gradio session unless another `session` is given."""
        from gradio_client import handle_file
        from gradio_client.exceptions import AppError

        if session is None:
            if self.gr is None:
                self.gr = gradio_client(self.server.url, self.folder / "downloads")
            session = self.gr
        args = {k: ([handle_file(str(p)) for p in v] if isinstance(v, list)
                    else handle_file(str(v)) if isinstance(v, Path) else v)
                for k, v in kwargs.items()}
        try:
            answer = session.submit(api_name=api_name, **args).result(timeout=self.timeout)
        except AppError as exc:
            text = str(exc)
            if "verbose error reporting" in text or not text.strip():
                return "uncaught", first_line(text) or type(exc).__name__, None
            return "gr.Error", first_line(text), None
        except TimeoutError:
            return "timeout", f"no answer in {self.timeout:.0f} s", None
        except Exception as exc:  # noqa: BLE001  (a client-side refusal is a result too)
            return "client error", f"{type(exc).__name__}: {first_line(exc)}", None
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return "ok", first_line(text), answer

    def rest(self, path: str, **kwargs: Any) -> tuple[str, str]:
        try:
            return http_send(self.http.post(path, **kwargs))
        except httpx.TimeoutException:
            return "timeout", f"no answer in {self.timeout:.0f} s"
        except httpx.HTTPError as exc:
            return "no answer", f"{type(exc).__name__}: {first_line(exc)}"

    def owlv2(self, training: list[dict], image: Any = None, **extra: Any) -> tuple[str, str]:
        image = image or {"type": "base64", "value": b64(self.data.queries[0].read_bytes())}
        return self.rest("/owlv2/infer", json={"image": image, "training_data": training,
                                               "confidence": 0.5, **extra})

    def example(self) -> dict:
        return {"type": "base64", "value": b64(self.data.example.read_bytes())}

    def gr_infer(self, training: str, queries: list[Path] | None = None) -> tuple[str, str]:
        return self.gradio("/infer", training_data=training, example_images=[self.data.example],
                           query_images=queries or [self.data.queries[0]], **SETTINGS)

    def no_marker(self) -> str:
        return "a pickle payload ran code on the server" if self.marker.exists() else ""

    def nothing_outside(self) -> str:
        found = [p.name for p in self.outside.rglob("*")] if self.outside.exists() else []
        return f"files written outside the server's folders: {found[:3]}" if found else ""

    # ---- the cases
    def cases(self) -> list[Case]:
        d, plan = self.data, self.plan
        w, h = d.example_size
        box = {"x": w / 2, "y": h / 2, "w": w / 4, "h": h / 4, "negative": False}
        evil = self.folder / "payload.pt"
        evil.write_bytes(pickle_pt(self.marker))
        bomb = zip_bomb_pt(self.folder, plan.zip_bomb_mb)
        side = plan.bomb_side
        png = self.folder / f"bomb-{side}.png"
        png.write_bytes(png_bomb(side))
        long_name = "n" * (plan.class_name_mb * MB)
        many = [{**box, "cls": f"class-{i}"} for i in range(plan.many_classes)]
        digits = int("9" * 400)
        huge_box = [{**box, "w": digits, "cls": "big"}]
        limit = limits.current()
        port = self.server.port
        one_png = ("images", (d.queries[0].name, d.queries[0].read_bytes(), "image/png"))
        numpy_payload = b64(_pickle_calling(os.makedirs, str(self.marker)))
        self.outside.mkdir()
        traversal = "../" * 12 + str(self.outside).lstrip("/")
        c: list[Case] = [
            Case("pickle payload .pt (upload)", "REST /infer", lambda: self.rest(
                "/infer", files=[one_png, ("weights_file", ("evil.pt", evil.read_bytes()))]),
                check=self.no_marker, want="code"),
            Case("pickle payload .pt", "gradio /infer_pt", lambda: self.gradio(
                "/infer_pt", pt_file=evil, query_images=[d.queries[0]], **SETTINGS),
                check=self.no_marker, want="code"),
            Case("pickle payload as a numpy image", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": [{**box, "cls": "a"}]}],
                image={"type": "numpy", "value": numpy_payload}), check=self.no_marker,
                want="code"),
            Case(f"zip-bomb .pt ({bomb.stat().st_size // 1024} KiB -> {plan.zip_bomb_mb} MiB)",
                 "REST /infer", lambda: self.rest(
                     "/infer", files=[one_png, ("weights_file", ("bomb.pt", bomb.read_bytes()))])),
            Case("zip-bomb .pt", "gradio /infer_pt", lambda: self.gradio(
                "/infer_pt", pt_file=bomb, query_images=[d.queries[0]], **SETTINGS)),
            Case(f"{plan.class_name_mb} MB class name", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": [{**box, "cls": long_name}]}])),
            Case(f"{plan.class_name_mb} MB class name", "gradio /infer", lambda: self.gr_infer(
                json.dumps([{"image": d.example.name, "boxes": [{**box, "cls": long_name}]}]))),
            Case(f"{plan.many_classes:,} classes", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": many}])),
            Case(f"{plan.many_classes:,} classes", "gradio /infer", lambda: self.gr_infer(
                json.dumps([{"image": d.example.name, "boxes": many}]))),
            Case("400-digit box size", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": huge_box}])),
            Case("400-digit box size", "gradio /infer", lambda: self.gr_infer(
                json.dumps([{"image": d.example.name, "boxes": huge_box}]))),
            Case("file image ref /etc/passwd", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": {"type": "file", "value": "/etc/passwd"},
                  "boxes": [{**box, "cls": "a"}]}])),
            Case("server path as image /etc/passwd", "gradio /infer", lambda: self.gr_infer(
                json.dumps([{"image": "/etc/passwd", "boxes": [{**box, "cls": "a"}]}]))),
            Case("url image ref (URLs off)", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": [{**box, "cls": "a"}]}],
                image={"type": "url", "value": f"http://{HOST}:{port}/"})),
        ]
        if self.url_server is not None:
            for url in (f"http://{HOST}:{self.url_server.port}/", "http://169.254.169.254/"
                        "latest/meta-data/", f"http://[::ffff:{HOST}]:{port}/",
                        f"http://localhost:{port}/"):
                c.append(Case(f"SSRF url {url.split('/')[2]} (URLs on)", "REST /owlv2/infer",
                              lambda url=url: self._url_owlv2(url)))
        c += [
            Case(f"cheap request during a {HEAVY_CLASSES}-class x {HEAVY_IMAGES}-image one",
                 "REST /owlv2/infer", lambda: self._starve("rest"), expect="accept"),
            Case(f"cheap request during a {HEAVY_CLASSES}-class x {HEAVY_IMAGES}-image one",
                 "gradio /infer", lambda: self._starve("gradio"), expect="accept"),
            Case("poisoned .pt image embeddings (fake boxes at confidence 1)",
                 "gradio /infer_pt", self._poison, expect="either", check=self._poisoned),
            Case(f"{side}x{side} PNG bomb ({len(png.read_bytes()) // 1024} KiB)",
                 "REST /owlv2/infer", lambda: self.owlv2(
                     [{"image": self.example(), "boxes": [{**box, "cls": "a"}]}],
                     image={"type": "base64", "value": b64(png.read_bytes())})),
            Case(f"{side}x{side} PNG bomb", "gradio /infer", lambda: self.gr_infer(
                d.training_json(d.example.name), queries=[png])),
            Case("Content-Length 1 GB, body just over the limit", "REST /owlv2/infer",
                 lambda: raw_request(port, _head("/owlv2/infer", 1024**3, "application/json"),
                                     streamed(limit.max_request_bytes + MB), RAW_TIMEOUT_S)),
            Case("Content-Length 1 GB, body just over the limit", "gradio upload",
                 lambda: self._stream_upload(limit.max_upload_bytes + MB, declared=1024**3)),
            Case(f"streamed body {(limit.max_request_bytes + MB) // MB} MiB (chunked)",
                 "REST /owlv2/infer", lambda: raw_request(
                     port, _head("/owlv2/infer", None, "application/json"),
                     _chunked(streamed(limit.max_request_bytes + MB)), RAW_TIMEOUT_S)),
            Case(f"streamed upload {(limit.max_upload_bytes + MB) // MB} MiB", "gradio upload",
                 lambda: self._stream_upload(limit.max_upload_bytes + MB)),
            Case("unknown JSON fields (ignored)", "REST /owlv2/infer", lambda: self.owlv2(
                [{"image": self.example(), "boxes": [{**box, "cls": "a", "colour": "red"}],
                  "extra": 1}], surprise={"nested": [1, 2]}), expect="accept"),
            Case("malformed JSON", "REST /owlv2/infer", lambda: self.rest(
                "/owlv2/infer", content=b'{"image": [{"type": "base64", "value": ',
                headers={"content-type": "application/json"})),
            Case("path-traversal image file name", "REST /infer", lambda: self.rest(
                "/infer", files=[("images", (traversal + "/rest.png",
                                              d.queries[0].read_bytes(), "image/png")),
                                 ("weights_file", (traversal + "/w.pt",
                                                   self._valid_pt().read_bytes()))]),
                expect="either", check=self.nothing_outside),
            Case("path-traversal upload file name", "gradio upload",
                 lambda: self._traversal_upload(traversal + "/upload.png"),
                 expect="either", check=self.nothing_outside),
            Case("path-traversal export name", "gradio /export", lambda: self._export_named(
                traversal + "/export"), expect="either", check=self.nothing_outside),
        ]
        return c + self.web_cases()

    # ---- issue 19 items 4-6 (web): HTML in names, slow bodies, a studio open to a network
    def web_cases(self) -> list[Case]:
        """HTML in a name comes back escaped in the error (shown as a pop-up); a body that
        trickles or never comes gets 408 after ``max_body_seconds``; the guarded server
        (``--users`` + ``--rest-key``) refuses the page, its uploads and REST without them."""
        hostile_name = '<img src=x onerror="alert(1)">.png'
        c = [Case("HTML in an image name, echoed by the error", "gradio /infer",
                  lambda: self._no_raw_html(self.gr_infer(
                      self.data.training_json(hostile_name)))),
             Case("body trickled 1 byte every 5 s", "REST /owlv2/infer",
                  lambda: self._trickle("/owlv2/infer", "application/json", 5.0),
                  want="max_body_seconds"),
             Case("upload that sends no body", "gradio upload",
                  lambda: self._trickle("/gradio_api/upload",
                                        "multipart/form-data; boundary=x", None),
                  want="send it at once")]  # the 30 s stall bound comes before the total
        guarded = getattr(self, "guarded", None)
        if guarded is not None:
            c += [Case("studio config without login (--users)", "gradio /config",
                       lambda: http_send(httpx.get(guarded.url + "/config", timeout=30))),
                  Case("upload without login (--users)", "gradio upload",
                       lambda: http_send(httpx.post(guarded.url + "/gradio_api/upload",
                                                    files={"files": ("a.png", b"x")},
                                                    timeout=30))),
                  Case("REST without the key (--rest-key)", "REST /owlv2/infer",
                       lambda: http_send(httpx.post(guarded.url + "/owlv2/infer",
                                                    json={}, timeout=30)), want="X-API-Key"),
                  Case("REST with a wrong key", "REST /owlv2/infer",
                       lambda: http_send(httpx.post(guarded.url + "/owlv2/infer", json={},
                                                    headers={"X-API-Key": "guess"},
                                                    timeout=30)), want="X-API-Key")]
        return c

    @staticmethod
    def _no_raw_html(answer: tuple[str, str]) -> tuple[str, str]:
        status, message = answer
        if "<img" in message:
            return "raw HTML", f"the message carries markup: {message}"
        return status, message

    def _trickle(self, path: str, content_type: str, every_s: float | None,
                 declared: int = 100_000) -> tuple[str, str]:
        """Declare `declared` bytes, then send one every `every_s` seconds (None: none) until
        the server answers or `BODY_GIVE_UP_S` pass."""
        give_up = time.monotonic() + BODY_GIVE_UP_S
        with socket.create_connection((HOST, self.server.port), timeout=BODY_GIVE_UP_S) as sock:
            sock.sendall(_head(path, declared, content_type).encode("latin-1"))
            while time.monotonic() < give_up:
                ready, _, _ = select.select([sock], [], [], every_s or 1.0)
                if ready:
                    data = b""
                    sock.settimeout(10)
                    try:
                        while part := sock.recv(65536):  # the answer closes the connection
                            data += part
                    except OSError:
                        pass
                    status = data.split(b" ", 2)[1].decode() if data.count(b" ") >= 2 else "?"
                    body = data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
                    try:
                        body = json.loads(body).get("message") or body
                    except (ValueError, AttributeError):
                        pass
                    return status, first_line(body)
                if every_s is not None:
                    sock.sendall(b"x")
        return "no answer", f"still open after {BODY_GIVE_UP_S:.0f} s"

    def _starve(self, via: str) -> tuple[str, str]:
        """Issue 11 item 4: a cheap request sent while an expensive one (many classes x many
        images at confidence 0) runs; how long each took. The cheap one's status counts."""
        d = self.data
        w, h = d.example_size
        boxes = [{"x": 8 + (i % 20) * (w - 16) / 19, "y": 8 + (i // 20) * (h - 16) / 9,
                  "w": 16, "h": 16, "cls": f"heavy-{i}", "negative": False}
                 for i in range(HEAVY_CLASSES)]
        self._seed = getattr(self, "_seed", 0) + 1  # new images each time: no cache hits
        blobs = [noise_png(96, 72, seed=50_000 + 100 * self._seed + k)
                 for k in range(HEAVY_IMAGES)]
        timings: dict[str, float] = {}
        results: dict[str, tuple[str, str]] = {}

        def heavy() -> None:
            start = time.perf_counter()
            if via == "rest":
                results["heavy"] = self.rest("/owlv2/infer", json={
                    "image": [{"type": "base64", "value": b64(b)} for b in blobs],
                    "training_data": [{"image": self.example(), "boxes": boxes}],
                    **SETTINGS, "confidence": 0.0})
            else:
                paths = []
                for k, blob in enumerate(blobs):
                    paths.append(self.folder / f"heavy{self._seed}-{k}.png")
                    paths[-1].write_bytes(blob)
                session = gradio_client(self.server.url, self.folder / "heavy-downloads")
                results["heavy"] = self.gradio_answer(
                    "/infer", session=session, training_data=json.dumps(
                        [{"image": d.example.name, "boxes": boxes}]),
                    example_images=[d.example], query_images=paths,
                    **{**SETTINGS, "confidence": 0.0})[:2]
            timings["heavy"] = time.perf_counter() - start

        thread = threading.Thread(target=heavy, daemon=True)
        thread.start()
        time.sleep(1.0)  # the expensive request is in
        start = time.perf_counter()
        if via == "rest":
            status, message = self.owlv2([{"image": self.example(), "boxes": d.boxes}])
        else:
            status, message = self.gr_infer(d.training_json(d.example.name))
        cheap = time.perf_counter() - start
        thread.join(timeout=self.timeout)
        heavy_status = results.get("heavy", ("timeout", ""))[0]
        took = f"{timings['heavy']:.1f} s" if "heavy" in timings else "no answer"
        return status, (f"cheap one answered in {cheap:.1f} s; the expensive one "
                        f"({heavy_status}) took {took}" if status in ("200", "ok")
                        else message)

    def _poison(self) -> tuple[str, str]:
        """Issue 11 item 1: upload a `.pt` whose image embeddings of an image are fake (every
        candidate box the same, scoring 1.0), then ask other sessions about that image. The
        same requests before and after must give the same detections."""
        d = self.data
        before = self._answers_about_example()
        status, message, path = self.gradio_answer(
            "/export", training_data=d.training_json(d.example.name),
            example_images=[d.example], name="poison", small=False)
        if status != "ok":
            self.poison_diff = f"could not export the .pt to poison: {message}"
            return status, message
        poisoned = poison_pt(Path(str(path)), self.folder / "poisoned.pt")
        status, message, own = self.gradio_answer("/infer_pt", pt_file=poisoned,
                                                  query_images=[d.example], **SETTINGS)
        after = self._answers_about_example()
        self.poison_diff = "" if before == after else (
            "cache poisoned: other sessions' detections changed after the upload "
            f"({len(before[0])} -> {len(after[0])} gradio, {len(before[1])} -> "
            f"{len(after[1])} REST)")
        if status != "ok" or self.poison_diff:
            return status, message
        planted = _detections(own["results"][0])
        used = bool(planted) and all(p[5] >= 0.999 for p in planted)
        return status, (f"the upload's own answer {'used' if used else 'did not use'} the fake "
                        f"embeddings ({len(planted)} detections); other sessions' answers "
                        "(gradio, REST) unchanged")

    def _poisoned(self) -> str:
        return getattr(self, "poison_diff", "")

    def _answers_about_example(self) -> tuple[list, list]:
        """Detections on the example image from a fresh gradio session and from REST."""
        from gradio_client import handle_file

        d = self.data
        session = gradio_client(self.server.url, self.folder / "poison-downloads")
        example = handle_file(str(d.example))
        answer = session.submit(training_data=d.training_json(d.example.name),
                                example_images=[example], query_images=[example],
                                api_name="/infer", **SETTINGS).result(timeout=self.timeout)
        body = {"image": self.example(), "training_data": [
            {"image": self.example(), "boxes": d.boxes}], **SETTINGS}
        rest = _json_or_raise(self.http.post("/owlv2/infer", json=body))
        return (_detections(answer["results"][0]), _detections(rest))

    def _url_owlv2(self, url: str) -> tuple[str, str]:
        assert self.url_server is not None
        with httpx.Client(base_url=self.url_server.url, timeout=self.timeout) as http:
            try:
                return http_send(http.post("/owlv2/infer", json={
                    "image": {"type": "url", "value": url}, "confidence": 0.5,
                    "training_data": [{"image": self.example(), "boxes": [
                        {"x": 50, "y": 50, "w": 30, "h": 30, "cls": "a"}]}]}))
            except httpx.HTTPError as exc:
                return "no answer", f"{type(exc).__name__}: {first_line(exc)}"

    def _stream_upload(self, total: int, declared: int | None = None) -> tuple[str, str]:
        """A multipart upload of `total` bytes, chunked, or under a `declared` Content-Length
        (a lie when larger than what is sent)."""
        head = b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        tail = b"\r\n--x--\r\n"

        def body() -> Iterator[bytes]:
            yield head
            yield from streamed(total)
            yield tail

        parts = body() if declared is not None else _chunked(body())
        return raw_request(self.server.port, _head("/gradio_api/upload", declared,
                                                    "multipart/form-data; boundary=x"),
                           parts, RAW_TIMEOUT_S)

    def _traversal_upload(self, name: str) -> tuple[str, str]:
        """Upload under a ../ name; the stored path must stay in the server's upload folder."""
        response = self.http.post("/gradio_api/upload", files=[
            ("files", (name, self.data.queries[0].read_bytes(), "image/png"))])
        if response.status_code != 200:
            return http_send(response)
        stored = [str(p) for p in response.json()]
        root = self.server.gradio_tmp.resolve()
        inside = all(Path(p).resolve().is_relative_to(root) for p in stored)
        where = ", ".join(Path(p).name for p in stored)
        return "200", (f"stored inside the upload folder as {where}" if inside
                       else f"stored OUTSIDE the upload folder: {stored}")

    def _export_named(self, name: str) -> tuple[str, str]:
        d = self.data
        status, message, answer = self.gradio_answer(
            "/export", training_data=d.training_json(d.example.name),
            example_images=[d.example], name=name, small=True)
        if status == "ok":
            return status, f"saved as {Path(str(answer)).name}"
        return status, message

    def _valid_pt(self) -> Path:
        path = self.folder / "valid.pt"
        if not path.exists():
            d = self.data
            status, message, answer = self.gradio_answer(
                "/export", training_data=d.training_json(d.example.name),
                example_images=[d.example], name="valid", small=True)
            if status != "ok":
                raise RuntimeError(f"could not export a valid .pt: {message}")
            shutil.copy(str(answer), path)
        return path

    # ---- running them
    def run(self, deadline: float, only: str = "") -> list[Row]:
        rows = []
        for case in self.cases():
            if only.lower() not in case.name.lower():
                continue
            if time.monotonic() > deadline:
                rows.append(Row(case.name, case.target, "not run", "whole-run timeout",
                                "FAIL", 0.0))
                continue
            if not self.server.alive():
                rows.append(Row(case.name, case.target, "not run", "the server had died",
                                "FAIL", 0.0))
                continue
            before = self.server.rss.mark()
            start = time.perf_counter()
            try:
                status, message = case.send()
            except Exception as exc:  # noqa: BLE001
                status, message = "client error", f"{type(exc).__name__}: {first_line(exc)}"
            seconds = time.perf_counter() - start
            side_effect = case.check() if case.check else ""
            if "OUTSIDE" in message:
                side_effect = side_effect or message
            verdict = judge(status, case.expect, self.server.alive(), side_effect)
            if verdict == "ok" and case.want and case.want.lower() not in message.lower():
                verdict = f"FAIL (message should say {case.want!r})"
            if verdict == "ok" and _shows_server_path(message, self.server):
                verdict = "FAIL (message shows a server path)"
            if side_effect:
                message = side_effect
            peak = self.server.rss.peak()
            growth = None if peak is None or before is None else peak - before
            rows.append(Row(case.name, case.target, status, message, verdict,
                            round(seconds, 2), _round(peak), _round(growth)))
        return rows


def _shows_server_path(message: str, server: Server) -> bool:
    """Whether a message names a folder of the server (its temp, upload or work folders)."""
    folders = (str(server.folder), str(server.gradio_tmp), "/tmp/gradio", tempfile.gettempdir()
               + "/owl-")
    return any(f in message for f in folders)


def _detections(result: dict) -> list[tuple]:
    """Comparable detections of one answer (rounded; without per-request ids)."""
    return sorted((p["class"], round(p["x"], 1), round(p["y"], 1), round(p["width"], 1),
                   round(p["height"], 1), round(p["confidence"], 4))
                  for p in result["predictions"])


def poison_pt(source: Path, target: Path) -> Path:
    """A copy of an exported `.pt` whose image embeddings are fake: every candidate box the
    same small box, with the first class's exemplar as its embedding (cosine 1: confidence 1)."""
    import torch

    payload = torch.load(source, map_location="cpu", weights_only=True)  # our own export
    first = next(v["positive"] for v in payload["train_data_dict"].values()
                 if v["positive"] is not None)
    fake = {}
    for key, (objectness, boxes, embeds, shift, scale) in payload["image_embeds"].items():
        fake[key] = (torch.ones_like(objectness),
                     torch.tensor([0.2, 0.2, 0.05, 0.05]).expand_as(boxes).clone(),
                     first[0].expand_as(embeds).clone(), torch.zeros_like(shift),
                     torch.ones_like(scale))
    payload["image_embeds"] = fake
    torch.save(payload, target)
    return target


def _pickle_calling(function: Callable, argument: str) -> bytes:
    import pickle

    class Payload:
        def __reduce__(self):
            return (function, (argument,))

    return pickle.dumps(Payload())


def _head(path: str, length: int | None, content_type: str) -> str:
    size = (f"Content-Length: {length}\r\n" if length is not None
            else "Transfer-Encoding: chunked\r\n")
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\n"
            f"{size}Connection: close\r\n\r\n")


def _chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        if part:
            yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def judge(status: str, expect: str, alive: bool, side_effect: str) -> str:
    """FAIL on a crash, 5xx, uncaught error, timeout, side effect, or an unexpected answer."""
    if not alive:
        return "FAIL (server died)"
    if side_effect:
        return "FAIL"
    refused = status == "gr.Error" or (status.isdigit() and 400 <= int(status) < 500)
    accepted = status == "ok" or (status.isdigit() and 200 <= int(status) < 300)
    if status.isdigit() and int(status) >= 500:
        return "FAIL (5xx)"
    if expect == "refuse":
        return "ok" if refused else "FAIL"
    if expect == "accept":
        return "ok" if accepted else "FAIL"
    return "ok" if refused or accepted else "FAIL"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# ---------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    import torch

    import owl_core.engine.prompt_file  # noqa: F401  (seconds to import: never inside a timing)

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def tables(result: dict[str, Any]) -> str:
    """The markdown tables printed and written into the README."""
    out = []
    load = result.get("load")
    if load:
        out.append(f"Load: {load['clients']} clients x {load['requests_per_client']} requests "
                   f"at once: {load['done']}/{load['planned']} done, {load['failures']} failed, "
                   f"{load['leaks']} cross-session leaks, {load['requests_per_s']} req/s "
                   f"({load['wall_s']} s), p50 {_ms(load['p50_ms'])} ms, p95 "
                   f"{_ms(load['p95_ms'])} ms; server alive: {load['server_alive']}.\n")
        out.append("| kind | requests | failures | leaks | p50 ms | p95 ms |")
        out.append("|---|---|---|---|---|---|")
        for kind, row in load["per_kind"].items():
            out.append(f"| {kind} | {row['requests']} | {row['failures']} | {row['leaks']} | "
                       f"{_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} |")
        for problem in load["problems"][:5]:
            out.append(f"\n- {problem}")
        out.append("")
    memory = result.get("memory")
    if memory:
        budget = (f"{memory['cache_mb']} MiB cache budget (`--cache-mb`)"
                  if memory["cache_mb"] is not None else "no cache budget flag in app.py")
        out.append(f"Memory: {memory['images']} distinct images in {memory['requests']} "
                   f"requests ({memory['failures']} failed), {budget}: server RSS "
                   f"{memory['baseline_rss_mb']} MiB before, max {memory['max_rss_mb']} MiB, "
                   f"{memory['final_rss_mb']} MiB at the end; growth {memory['growth_mb']} "
                   f"MiB (budget + {memory['growth_over_budget_mb']} MiB): "
                   f"{memory['growth_rest_half_mb']} MiB over the first half (REST), "
                   f"{memory['growth_gradio_half_mb']} MiB over the second (gradio). "
                   "RSS by images sent: "
                   + ", ".join(f"{n}: {r:.0f}" for n, r in memory["samples"]) + "."
                   + _memory_trend(memory) + "\n")
    rows = result.get("hostile")
    if rows:
        out.append("| hostile input | sent to | status | message (first line) | server RSS "
                   "peak (growth) MiB | verdict |")
        out.append("|---|---|---|---|---|---|")
        for r in rows:
            message = r["message"].replace("|", "\\|")
            out.append(f"| {r['name']} | {r['target']} | {r['status']} | {message} | "
                       f"{_ms(r['peak_rss_mb'])} (+{_ms(r['rss_growth_mb'])}) | "
                       f"{r['verdict']} |")
        out.append("")
    out += reliability_projects.tables(result)
    out.append(f"Verdict: {'PASS' if result['ok'] else 'FAIL'}"
               + ("" if result["ok"] else f" ({'; '.join(result['failed'][:6])})") + ".")
    return "\n".join(out)


def _memory_trend(memory: dict[str, Any]) -> str:
    """A sentence on whether RSS kept rising over the last fifth of the images."""
    samples = memory["samples"]
    if len(samples) < 5:
        return ""
    late = samples[-1][1] - samples[len(samples) * 4 // 5 - 1][1]
    return (f" Still rising over the last images (+{late:.0f} MiB)." if late > 5
            else " Flat over the last images.")


def _wrap(text: str, width: int = 100) -> str:
    """Prose wrapped like the rest of the README; table rows and list items untouched."""
    import textwrap

    return "\n".join(line if line.startswith(("|", "- ")) or len(line) <= width
                     else textwrap.fill(line, width, break_long_words=False,
                                        break_on_hyphens=False)
                     for line in text.split("\n"))


def readme_section(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    samples = sorted(result.get("load_samples") or [])
    during = (f", during the run {samples[0]:.1f}-{samples[-1]:.1f} (median "
              f"{samples[len(samples) // 2]:.1f}, 1-minute load average every 10 s)"
              if samples else "")
    intro = (f"Measured with `{command}` ({m['cores']} cores, {m['cpu']}, torch {m['torch']}, "
             f"load average before {m['load_average']}{during}; run {result['wall_s']:.0f} s; "
             "tiny "
             "random-weight model, so the numbers show the server's overhead, not OWLv2's "
             "compute). The bench starts `python app.py` itself on 127.0.0.1 (and a second one "
             "with `--allow-url-images` for the SSRF rows); any 5xx, uncaught error, timeout, "
             "server death, code run by a payload, poisoned shared cache, file written outside "
             "the server's folders or server path in a message is FAIL. `--quick` is the smoke "
             "test (`tests/test_reliability_bench.py`), `--json OUT` keeps the numbers.")
    return _wrap(intro) + "\n\n" + _wrap(tables(result)) + "\n"


def update_readme(path: Path, body: str) -> None:
    """Replace the body of README's ``## Reliability`` section; without one, insert it before
    ``## Example assets`` (or at the end)."""
    text = path.read_text()
    heading = f"## {SECTION}\n"
    if heading in text:
        start = text.index(heading) + len(heading)
        end = text.find("\n## ", start)
        end = len(text) if end < 0 else end + 1
        text = text[:start] + "\n" + body + ("\n" if end < len(text) else "") + text[end:]
    elif f"\n## {NEXT_SECTION}\n" in text:
        at = text.index(f"\n## {NEXT_SECTION}\n") + 1
        text = text[:at] + heading + "\n" + body + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + heading + "\n" + body
    path.write_text(text)


# ---------------------------------------------------------------------------- main
def sample_load(every_s: float = 10.0) -> list[float]:
    """The 1-minute load average every `every_s` seconds for the rest of the run (a daemon
    thread appends to the list returned)."""
    samples: list[float] = []

    def run() -> None:
        while True:
            samples.append(round(os.getloadavg()[0], 2))
            time.sleep(every_s)

    threading.Thread(target=run, name="load-sampler", daemon=True).start()
    return samples


@contextmanager
def watchdog(seconds: float, servers: list[Server]) -> Iterator[None]:
    """Stop the servers and exit with 3 when the whole run takes longer than `seconds`."""
    def expire() -> None:
        print(f"reliability: whole-run timeout ({seconds:.0f} s); stopping.", file=sys.stderr,
              flush=True)
        for server in servers:
            server.stop()
        os._exit(3)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke sizes: 2 clients x 5 requests, 20 images, smaller payloads")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    parser.add_argument("--update-readme", nargs="?", const=str(ROOT / "README.md"),
                        default=None, metavar="README",
                        help="write the tables into README's 'Reliability' section")
    parser.add_argument("--model-dir", help="OWLv2 checkpoint folder (default: random tiny "
                                            "weights under ~/.cache/owl_studio/bench_models)")
    parser.add_argument("--clients", type=int, help="override the number of clients")
    parser.add_argument("--requests", type=int, help="override the requests per client")
    parser.add_argument("--images", type=int, help="override the images of the memory phase")
    parser.add_argument("--cache-mb", type=int, default=16,
                        help="the server's embedding cache budget (--cache-mb of app.py); "
                             "small, so that the tiny model's ~50 KB per image fills it")
    parser.add_argument("--timeout", type=float, help="whole-run timeout, seconds")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset of load, memory, hostile (the server's), "
                             "projects, journal (bench/reliability_projects.py); default: all "
                             "(--quick: all but journal, the kill -9 trials)")
    parser.add_argument("--url-server", action=argparse.BooleanOptionalAction, default=None,
                        help="start a second server with --allow-url-images for the SSRF rows "
                             "(default: on, off with --quick: one server start less)")
    parser.add_argument("--server-args", default="",
                        help="extra app.py flags for the servers, e.g. '--device-cache-mb 1'")
    parser.add_argument("--only", default="",
                        help="run only the hostile inputs whose name contains this text")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    parser.add_argument("--from-json", metavar="IN",
                        help="run nothing: print (and --update-readme) a saved --json result")
    return parser.parse_args(argv)


def _bounded(value: int | None, default: int, most: int) -> int:
    return max(1, min(most, default if value is None else value))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        return report(result, args, result.get("command", "python bench/reliability.py"))
    base = QUICK if args.quick else FULL
    plan = Plan(clients=_bounded(args.clients, base.clients, 32),
                requests=_bounded(args.requests, base.requests, 500),
                images=_bounded(args.images, base.images, 5000),
                images_per_request=base.images_per_request, class_name_mb=base.class_name_mb,
                many_classes=base.many_classes, bomb_side=base.bomb_side,
                zip_bomb_mb=base.zip_bomb_mb,
                timeout_s=min(3600.0, args.timeout or base.timeout_s),
                request_timeout_s=base.request_timeout_s)
    chosen = args.sections or ("load,memory,hostile,projects" if args.quick
                               else "load,memory,hostile,projects,journal")
    sections = {s.strip() for s in chosen.split(",") if s.strip()}
    if args.model_dir:
        model_args = ["--model", str(Path(args.model_dir).resolve())]
    else:
        cache = Path.home() / ".cache" / "owl_studio" / "bench_models"
        model_args = ["--random-weights", "tiny", "--random-weights-dir", str(cache)]
    started = time.monotonic()
    load_samples = sample_load()  # the load the numbers were measured under, for the README
    deadline = started + plan.timeout_s - 30  # leaves time to stop the servers and report
    info = machine()
    help_text = app_flags()
    work = Path(tempfile.mkdtemp(prefix="owl-reliability-"))
    servers: list[Server] = []
    result: dict[str, Any] = {"machine": info, "plan": plan.__dict__, "failed": []}
    try:
        with watchdog(plan.timeout_s, servers):
            extra = shlex.split(args.server_args)
            need_server = bool(sections & {"load", "memory", "hostile"})
            main_server = None
            if need_server:
                main_server = Server(work, "server", model_args, extra, help_text,
                                     args.cache_mb)
                servers.append(main_server)
            url_server = None
            want_urls = not args.quick if args.url_server is None else args.url_server
            if "hostile" in sections and want_urls and "--allow-url-images" in help_text:
                url_server = Server(work, "server-urls", model_args,
                                    [*extra, "--allow-url-images"], help_text, args.cache_mb)
                servers.append(url_server)
            guarded = None  # issue 19 item 6: logins and a REST key (web)
            if "hostile" in sections and "--users" in help_text:
                users = work / "users.txt"
                sys.path.insert(0, str(ROOT))
                from ui.access import add_user

                add_user(users, "alice", "bench-password")  # a salted hash, not the password
                guarded = Server(work, "server-guarded", model_args,
                                 [*extra, "--users", str(users), "--rest-key", "bench-key"],
                                 help_text, args.cache_mb)
                servers.append(guarded)
            for server in servers:
                server.wait_ready(max(30.0, deadline - time.monotonic()))
            print(f"servers ready in {time.monotonic() - started:.0f} s: "
                  + ", ".join(s.url for s in servers), flush=True)
            if main_server is not None:
                result["server_command"] = " ".join(main_server.command[1:])
            if "memory" in sections and main_server is not None and main_server.alive():
                result["memory"] = run_memory(main_server, work, plan, args.cache_mb, deadline)
                if result["memory"]["failures"] or not result["memory"]["server_alive"]:
                    result["failed"].append(f"memory: {result['memory']['failures']} failures")
                print("memory done", flush=True)
            if "load" in sections and main_server is not None and main_server.alive():
                result["load"] = run_load(main_server, work, plan, deadline)
                if result["load"]["failures"] or not result["load"]["server_alive"]:
                    result["failed"].append(f"load: {result['load']['failures']} failures")
                print("load done", flush=True)
            if "hostile" in sections and main_server is not None and main_server.alive():
                hostile = Hostile(main_server, url_server, work, plan,
                                  ClientData.make(50, work / "hostile-data"))
                hostile.guarded = guarded
                try:
                    rows = hostile.run(deadline, args.only)
                finally:
                    hostile.close()
                result["hostile"] = [r.__dict__ for r in rows]
                result["failed"] += [f"{r.name} -> {r.target}: {r.status}" for r in rows
                                     if r.verdict != "ok"]
                if url_server is not None:
                    url_server.stop()
                if guarded is not None:
                    guarded.stop()
                print("hostile inputs done", flush=True)
            if "projects" in sections:
                result["projects"] = reliability_projects.run_projects(args.quick)
                print("project zips done", flush=True)
            if "journal" in sections:
                result["journal"] = reliability_projects.run_journal(args.quick)
                print("kill -9 loss windows done", flush=True)
            result["failed"] += reliability_projects.failures(result)
            if main_server is not None and not main_server.alive():
                result["failed"].append("the server died: " + first_line(
                    main_server.log_tail(5)))
            if main_server is not None:
                result["server_log_tail"] = main_server.log_tail(40)
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}", file=sys.stderr)
    result["ok"] = not result["failed"]
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["load_samples"] = load_samples
    result["command"] = "python bench/reliability.py" + (" --quick" if args.quick else "")
    return report(result, args, result["command"])


def report(result: dict[str, Any], args: argparse.Namespace, command: str) -> int:
    """Print the tables; write the JSON and the README section when asked. Exit status."""
    result["table_markdown"] = tables(result)
    print(result["table_markdown"], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.update_readme:
        update_readme(Path(args.update_readme), readme_section(result, command))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
