#!/usr/bin/env bash
# Create .venv from a CPython >= 3.11, then install cmcgate editable with test extras.
#
# Any CPython >= 3.11 whose venv can bootstrap pip will do, Debian 12's /usr/bin/python3.11
# included: a venv made without --system-site-packages does not see Debian's site-packages
# (whose cryptography is too old), so everything comes from PyPI wheels. An interpreter
# outside /usr/bin (pyenv, /usr/local) is preferred when there is one; /usr/bin/python3.1x is
# the fall-back (it needs python3-venv, which scripts/install-deps.sh installs).
#
#   scripts/bootstrap-venv.sh [VENV]      create VENV (default .venv) and install into it
#   scripts/bootstrap-venv.sh --which     only print the interpreter that would be used
#   PYTHON=/path/to/python3 ...           use that interpreter
set -euo pipefail

new_enough() {  # CPython >= 3.11
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

usable() {  # >= 3.11 and `python -m venv` can install pip (Debian: python3-venv)
    new_enough "$1" && "$1" -c 'import venv, ensurepip' 2>/dev/null
}

candidates() {  # real paths of the interpreters found, one a line, in no particular order
    local name path
    for name in python3.13 python3.12 python3.11 python3; do
        path=$(command -v "$name" 2>/dev/null) || continue
        if [[ $path == */shims/* ]]; then  # pyenv: the shim resolves to ~/.pyenv/versions/...
            path=$(pyenv which "$name" 2>/dev/null) || continue
        fi
        readlink -f "$path" || true
    done
    for path in "$HOME"/.pyenv/versions/3.1[1-9]*/bin/python3 /usr/local/bin/python3.1[1-9] \
        /usr/bin/python3.1[1-9] /usr/bin/python3; do
        [[ -x $path ]] && readlink -f "$path"
    done
    return 0
}

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        usable "$PYTHON" || {
            echo "PYTHON=$PYTHON is not a CPython >= 3.11 with venv and ensurepip" >&2
            exit 1
        }
        echo "$PYTHON"
        return
    fi
    local found=() path
    mapfile -t found < <(candidates | awk '!seen[$0]++')
    for path in "${found[@]}"; do  # first choice: not the system's interpreter
        [[ $path == /usr/bin/* ]] && continue
        if usable "$path"; then echo "$path"; return; fi
    done
    for path in "${found[@]}"; do  # then the system's, in a venv of its own
        [[ $path == /usr/bin/* ]] || continue
        if usable "$path"; then echo "$path"; return; fi
    done
    for path in "${found[@]}"; do
        if new_enough "$path"; then
            echo "$path cannot create a venv with pip: install python3-venv" \
                "(scripts/install-deps.sh or 'make deps' does), or set PYTHON=" >&2
            exit 1
        fi
    done
    echo "no CPython >= 3.11 found (looked at: ${found[*]:-nothing}); install python3" \
        "(Debian 12 has 3.11) or set PYTHON=/path/to/python3.11+" >&2
    exit 1
}

if [[ "${1:-}" == "--which" ]]; then
    pick_python
    exit 0
fi
venv=${1:-.venv}
if [[ ! -x "$venv/bin/python" ]]; then
    python=$(pick_python)
    echo "creating $venv with $python ($("$python" --version))"
    "$python" -m venv "$venv"  # never --system-site-packages: Debian's cryptography is too old
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test]'
