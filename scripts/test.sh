#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh Debian machine: Debian's chromium for the
# browser tests, requirements-dev.txt into the active virtual environment or .venv/ (created on
# first use), `ruff check .`, then pytest.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k cache   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh

# Real browser for the UI tests: Debian's chromium (Playwright drives it via executable_path).
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

owl_python
owl_install requirements-dev.txt
"$PY" -m ruff check .
"$PY" -m pytest -q "$@"
