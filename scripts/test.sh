#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh Debian machine.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k cache   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Real browser for the UI tests: Debian's chromium (Playwright drives it via executable_path).
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

python -m pip install -r requirements-dev.txt
python -m pytest -q "$@"
