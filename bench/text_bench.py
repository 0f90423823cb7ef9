"""Text prompts: milliseconds per phrase for the text tower, and what the cache saves.

    python bench/text_bench.py --preset base          # random weights of the real architecture

Measures on a random-weight checkpoint (`make_random_model`, written once under
``~/.cache/owl_studio/bench_models/<preset>``; the same FLOPs as the real weights):

- cold: `compute_text_embeddings` (tokenise + text tower + projection) for batches of 1, 8 and
  64 distinct phrases, ms per phrase (median of repeats);
- edit: `OwlPredictor.set_examples(phrases=...)` after one phrase of 20 changed (19 cached,
  1 embedded; the predictor runs the text tower on its one-thread worker), ms per call;
- warm: the same call with every phrase cached, ms per call.

Prints one JSON object. Numbers depend on the machine's load (a shared 2-core CPU swings a lot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from owl_bench import ensure_model

from owl_core.engine.predictor import OwlPredictor
from owl_core.engine.text import compute_text_embeddings

WORDS = ["cat", "dog", "car", "red cup", "coin", "a bird", "tree", "bus", "kite", "a boat",
         "chair", "lamp", "sofa", "a toy", "bike", "shoe", "pen", "key", "mug", "hat"]


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for the cold measurement (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir).expanduser() if args.model_dir else (
        Path.home() / ".cache" / "owl_studio" / "bench_models" / args.preset)
    model_dir, _ = ensure_model(args.preset, model_dir)
    predictor = OwlPredictor(str(model_dir), device=args.device, dtype="fp32")
    owl = predictor.owl
    compute_text_embeddings(owl, ["warm up"])
    report: dict = {"preset": args.preset, "device": str(owl.device),
                    "torch_threads": torch.get_num_threads(),
                    "load_before": list(os.getloadavg()), "cold_ms_per_phrase": {}}
    counter = iter(range(10**9))
    for batch in (1, 8, 64):
        def cold(batch=batch):
            # distinct phrases each time (a 14-character tokenizer limit on random checkpoints)
            compute_text_embeddings(owl, [f"{WORDS[i % 20]} {next(counter)}"[:14]
                                          for i in range(batch)])
        report["cold_ms_per_phrase"][batch] = round(median_ms(cold, args.repeats) / batch, 2)
    phrases = {w: [w] for w in WORDS}
    predictor.set_examples(phrases=phrases)

    def edit():
        changed = dict(phrases)
        changed["cat"] = [f"cat {next(counter)}"[:14]]
        predictor.set_examples(phrases=changed)

    report["edit_one_of_20_ms"] = round(median_ms(edit, args.repeats), 2)
    report["warm_20_cached_ms"] = round(median_ms(lambda: predictor.set_examples(
        phrases=phrases), args.repeats), 2)
    report["load_after"] = list(os.getloadavg())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
