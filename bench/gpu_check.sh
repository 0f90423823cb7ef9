#!/usr/bin/env bash
# The GPU check in one command (issue 15 item 7): on a CUDA machine, the base architecture in
# full (fp32 vs fp16/bf16 parity, embed ms/image at batch 1 and 8, torch.compile on/off, the
# studio's warm preview, `owl-studio label --ray` with num_gpus=1 actors) within 8 minutes;
# without CUDA, the same code on CPU in a short mode (tiny architecture). Prints one table and
# writes bench/results/gpu_check.md and .json. Extra arguments go to bench/gpu_check.py:
#   bash bench/gpu_check.sh
#   bash bench/gpu_check.sh --short --sections parity,embed
# Uses the active virtual environment, else .venv/ (installing requirements there only when
# torch is missing: a GPU machine without internet needs them installed already).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh
owl_python
if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
    owl_install requirements.txt
fi
"$PY" -c "import ray" 2>/dev/null || echo "note: ray is not installed; the ray row is skipped" \
    "(pip install -r requirements-ray.txt)"
exec timeout "${GPU_CHECK_TIMEOUT:-480}" "$PY" bench/gpu_check.py "$@"
