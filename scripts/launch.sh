#!/usr/bin/env bash
# Install the runtime requirements and start the studio.
#   bash scripts/launch.sh [app.py arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python -m pip install -r requirements.txt
exec python app.py "$@"
