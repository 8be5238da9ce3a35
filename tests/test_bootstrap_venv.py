"""`scripts/bootstrap-venv.sh` on a bare Debian 12: no pyenv, only /usr/bin/python3.11.

The script used to refuse every interpreter under /usr/bin ("no CPython >= 3.11 outside
/usr/bin found"), so `make demo` did not work on a stock Debian 12 machine. A venv made
without --system-site-packages does not see Debian's old cryptography, so the system
interpreter is fine (with python3-venv, which scripts/install-deps.sh installs).

The environment here is what such a machine has: ``env -i``, PATH=/usr/bin:/bin, and a HOME
with no ~/.pyenv in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ca.keys.softhsm import softhsm_missing_reason
from gateway.devservices import slapd_available

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bootstrap-venv.sh"
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _system_python_version() -> tuple[int, int] | None:
    if not SYSTEM_PYTHON.exists():
        return None
    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    return int(out[0]), int(out[1])


pytestmark = pytest.mark.skipif(
    (_system_python_version() or (0, 0)) < (3, 11),
    reason="needs /usr/bin/python3 >= 3.11 (Debian 12)",
)


def _bare_env(home: Path, **extra: str) -> dict[str, str]:
    """What a fresh Debian login has: the system PATH, a HOME without pyenv."""
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def _ensure_python3_venv() -> None:
    """python3-venv comes from scripts/install-deps.sh (`make deps` runs before the tests);
    install it the same way if this machine has not run it since the package was added."""
    probe = [str(SYSTEM_PYTHON), "-c", "import venv, ensurepip"]
    if subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-deps.sh")], check=True, timeout=600)
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


def test_without_pyenv_the_system_python_is_chosen(tmp_path: Path) -> None:
    _ensure_python3_venv()
    result = subprocess.run(
        ["bash", str(SCRIPT), "--which"], cwd=tmp_path, env=_bare_env(tmp_path / "home"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    chosen = result.stdout.strip()
    assert chosen.startswith("/usr/bin/python3"), chosen
    assert Path(chosen).resolve() == SYSTEM_PYTHON.resolve()


def test_an_explicit_python_that_is_too_old_is_refused_clearly(tmp_path: Path) -> None:
    fake = tmp_path / "python2"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    result = subprocess.run(
        ["bash", str(SCRIPT), "--which"], cwd=tmp_path,
        env=_bare_env(tmp_path / "home", PYTHON=str(fake)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "not a CPython >= 3.11" in result.stderr


def _pip_cache() -> dict[str, str]:
    """The caller's pip cache, so the wheels come from disk where they are there already."""
    found = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, timeout=60
    )
    cache = found.stdout.strip()
    return {"PIP_CACHE_DIR": cache} if found.returncode == 0 and os.path.isdir(cache) else {}


@pytest.mark.slow
def test_the_script_builds_a_working_venv_from_the_system_python_and_the_demo_runs(
    tmp_path: Path,
) -> None:
    _ensure_python3_venv()
    venv = tmp_path / "venv"
    env = _bare_env(tmp_path / "home", **_pip_cache())
    made = subprocess.run(
        ["bash", str(SCRIPT), str(venv)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"creating {venv} with /usr/bin/python3" in made.stdout
    config = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in config
    assert "include-system-site-packages = false" in config
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import cryptography, pkcs11, gateway, sys; "
         "print(sys.base_prefix, cryptography.__version__, cryptography.__file__)"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    base_prefix, version, where = imported.stdout.split()
    assert base_prefix == "/usr"
    assert int(version.split(".")[0]) >= 44  # PyPI's, not Debian's python3-cryptography 38
    assert where.startswith(str(venv))
    if softhsm_missing_reason() is not None or not slapd_available():
        pytest.skip("the demo needs SoftHSM2 and slapd (run `make deps`)")
    demo = subprocess.run(
        [str(venv / "bin" / "python"), str(ROOT / "scripts" / "demo.py"),
         "--out", str(tmp_path / "demo-out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "demo OK" in demo.stdout
