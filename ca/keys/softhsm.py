"""Throwaway SoftHSM2 tokens for development, the demo and the tests.

SoftHSM reads ``SOFTHSM2_CONF`` in ``C_Initialize``, and python-pkcs11 keeps one loaded module
per path for the whole process. So a token's life is: ``C_Finalize`` whatever came before
(:func:`ca.keys.pool.finalize_module`), point ``SOFTHSM2_CONF`` at the new temp dir, initialise
the token with ``softhsm2-util``; on the way out close every session pool, ``C_Finalize``,
restore the environment and delete the dir. The next ``pkcs11.lib()`` call initialises the
module again and sees the next token. Only one token is live at a time (nesting is refused).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ca.keys.pkcs11 import Pkcs11Backend, find_softhsm_module
from ca.keys.pool import finalize_module

TOKEN_LABEL = "cmcgate-test"
USER_PIN = "1234"
SO_PIN = "5678"

_live: list[str] = []


class SoftHsmUnavailable(RuntimeError):
    """SoftHSM2 is not installed, or a token is live already."""


@dataclass(frozen=True)
class SoftHsmToken:
    """Where the token is and how to log in; ``env`` is for subprocesses (pkcs11-tool...)."""

    module_path: str
    token_label: str
    pin: str
    so_pin: str
    pin_file: Path
    conf_path: Path
    token_dir: Path
    directory: Path
    env: dict[str, str] = field(repr=False)

    def backend(self, **kwargs: Any) -> Pkcs11Backend:
        """A Pkcs11Backend on this token (caller closes it)."""
        kwargs.setdefault("pin", self.pin)
        return Pkcs11Backend(self.module_path, self.token_label, **kwargs)

    def pkcs11_tool(self, *args: str, login: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pkcs11-tool --module <softhsm> [--login --pin ...] args`` on this token."""
        cmd = ["pkcs11-tool", "--module", self.module_path, "--token-label", self.token_label]
        if login:
            cmd += ["--login", "--pin", self.pin]
        return subprocess.run(
            [*cmd, *args], env=self.env, capture_output=True, text=True, timeout=60
        )


def softhsm_missing_reason() -> str | None:
    """Why SoftHSM2 cannot be used here, or None if it can."""
    if find_softhsm_module() is None:
        return "libsofthsm2.so not found (install softhsm2: `make deps`, or set SOFTHSM2_MODULE)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util not on PATH (install softhsm2: `make deps`)"
    return None


@contextmanager
def softhsm_token_context(
    label: str = TOKEN_LABEL, pin: str = USER_PIN, so_pin: str = SO_PIN
) -> Iterator[SoftHsmToken]:
    """A fresh initialised token, torn down completely on exit."""
    module = find_softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        raise SoftHsmUnavailable(softhsm_missing_reason())
    if _live:
        raise SoftHsmUnavailable(
            f"a SoftHSM token is already live ({_live[0]}): SOFTHSM2_CONF is process-wide,"
            " so only one softhsm_token at a time"
        )
    directory = Path(tempfile.mkdtemp(prefix="cmcgate-softhsm-"))
    _live.append(str(directory))
    previous = os.environ.get("SOFTHSM2_CONF")
    try:
        token_dir = directory / "tokens"
        token_dir.mkdir(mode=0o700)
        conf = directory / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        pin_file = directory / "user.pin"
        pin_file.touch(mode=0o600)
        pin_file.write_text(pin + "\n")
        finalize_module(module)  # forget any token a previous user of the module saw
        os.environ["SOFTHSM2_CONF"] = str(conf)
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        init = subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label]
            + ["--pin", pin, "--so-pin", so_pin],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if init.returncode != 0:
            raise SoftHsmUnavailable(
                f"softhsm2-util --init-token failed: {init.stderr or init.stdout}"
            )
        yield SoftHsmToken(
            module_path=module,
            token_label=label,
            pin=pin,
            so_pin=so_pin,
            pin_file=pin_file,
            conf_path=conf,
            token_dir=token_dir,
            directory=directory,
            env=env,
        )
    finally:
        try:
            finalize_module(module)
        finally:
            if previous is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = previous
            shutil.rmtree(directory, ignore_errors=True)
            _live.remove(str(directory))
