#!/usr/bin/env bash
# Create .venv from a CPython >= 3.11 that is not Debian's system python (whose
# site-packages carry a too-old cryptography), then install cmcgate editable with test extras.
set -euo pipefail
venv=${1:-.venv}

is_good() {  # a python >= 3.11 that is not /usr/bin/python3*
    local py=$1 real
    real=$(readlink -f "$(command -v "$py")" 2>/dev/null) || return 1
    [[ -n "$real" && "$real" != /usr/bin/* ]] || return 1
    "$real" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

pick_python() {
    local candidate
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    for candidate in python3.13 python3.12 python3.11 python3; do
        # pyenv shims resolve to a real interpreter under ~/.pyenv/versions.
        if command -v pyenv >/dev/null 2>&1 && [[ $(command -v "$candidate" || true) == */shims/* ]]; then
            local real
            real=$(pyenv which "$candidate" 2>/dev/null || true)
            if [[ -n "$real" ]] && is_good "$real"; then echo "$real"; return; fi
            continue
        fi
        if is_good "$candidate"; then readlink -f "$(command -v "$candidate")"; return; fi
    done
    for candidate in "$HOME"/.pyenv/versions/3.1[1-9]*/bin/python3 /usr/local/bin/python3.1[1-9]; do
        if [[ -x "$candidate" ]] && is_good "$candidate"; then echo "$candidate"; return; fi
    done
    echo "no CPython >= 3.11 outside /usr/bin found; set PYTHON=/path/to/python3.11+" >&2
    exit 1
}

if [[ ! -x "$venv/bin/python" ]]; then
    python=$(pick_python)
    echo "creating $venv with $python ($("$python" --version))"
    "$python" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test]'
