# Sourced by launch.sh and test.sh: pick the Python to use and install a requirements file.
#
# Inside an active virtual environment ($VIRTUAL_ENV) its python is used. Otherwise .venv/ in
# the repository is created once with `python3 -m venv` (Debian's system Python refuses
# `pip install`, PEP 668, and `python` may not be on PATH) and reused. Requirements are
# installed only when a requirements*.txt file changed since the last install into that
# environment (a stamp file records their hash), so a second run starts at once.
#   owl_python                  -> sets PY
#   owl_install FILE            -> pip install -r FILE into PY's environment (when needed)

owl_python() {
    if [[ -n "${VIRTUAL_ENV:-}" && -x "${VIRTUAL_ENV}/bin/python" ]]; then
        PY="${VIRTUAL_ENV}/bin/python"
        OWL_ENV="${VIRTUAL_ENV}"
        return
    fi
    OWL_ENV="$PWD/.venv"
    PY="$OWL_ENV/bin/python"
    if [[ -x "$PY" ]]; then
        return
    fi
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is not installed; on Debian/Ubuntu: sudo apt-get install python3 python3-venv" >&2
        exit 1
    fi
    echo "Creating the virtual environment .venv (python3 -m venv) ..."
    if ! python3 -m venv "$OWL_ENV"; then
        rm -rf "$OWL_ENV"
        if command -v apt-get >/dev/null 2>&1; then  # Debian ships venv support separately
            local sudo=(); [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
            "${sudo[@]}" apt-get update
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
            python3 -m venv "$OWL_ENV"
        else
            echo "error: 'python3 -m venv' failed; install your system's venv package." >&2
            exit 1
        fi
    fi
}

owl_install() {
    local file="$1"
    local stamp="$OWL_ENV/.owl-studio-$(basename "$file").sha256"
    local want
    want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1) $PY"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return  # already installed from these exact files
    fi
    echo "Installing $file into $OWL_ENV ..."
    "$PY" -m pip install -r "$file"
    echo "$want" > "$stamp"
}
