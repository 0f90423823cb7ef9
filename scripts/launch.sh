#!/usr/bin/env bash
# Start the studio: installs requirements.txt into the active virtual environment, else into
# .venv/ (created on first use), then runs app.py.
#   bash scripts/launch.sh [app.py arguments]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh

owl_python
owl_install requirements.txt
exec "$PY" app.py "$@"
