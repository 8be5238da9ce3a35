"""A full state directory costs no key, on real services.

The gateway's state directory is a 64 KiB tmpfs, filled up; the users' keys live on a real
SoftHSM token.  A mail from a new sender gets 451 and must leave no key on the token
(pkcs11-tool counts the token's objects); with a key pool, the pool keeps its keys.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ca.keys.pkcs11 import Pkcs11Backend
from ca.keys.softhsm import SoftHsmToken
from gateway.broker.keypool import KeyPool
from gateway.certs.keystore import KeyStore
from gateway.devservices import SmtpSink
from tests.gateway import test_enrolment
from tests.gateway.test_enrolment import Gateway, _reply_code

bundled = test_enrolment.bundled  # the fixtures, for this module too
make_gateway = test_enrolment.make_gateway


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (skipped where mounting is not allowed)."""
    directory = tmp_path / "state"
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(directory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _token_objects(token: SoftHsmToken) -> list[str]:
    listed = token.pkcs11_tool("--list-objects")
    assert listed.returncode == 0, listed.stderr
    return [line for line in listed.stdout.splitlines() if "Object;" in line]


@pytest.mark.parametrize("pool_size", [0, 2], ids=["no-pool", "pool"])
def test_with_a_full_state_directory_new_senders_get_451_and_leave_no_key_on_the_token(
    softhsm_token: SoftHsmToken, softhsm_backend: Pkcs11Backend, small_state_dir: Path,
    make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink, pool_size: int,
) -> None:  # fmt: skip
    gateway = make_gateway(
        keys=KeyStore(softhsm_backend), state_dir=small_state_dir, pool_size=pool_size
    )
    pool = gateway.enroller.pool
    if pool_size:
        assert isinstance(pool, KeyPool) and pool.wait_full(120)
    _fill(small_state_dir)
    before = _token_objects(softhsm_token)
    assert len(before) == 2 * pool_size  # a private and a public key object per pool key
    for n in range(3):
        assert _reply_code(gateway, f"full-{n}@example.org") == 451
    if pool is not None:
        assert pool.available() == pool_size  # the keys taken went back to the pool
    gateway.enroller.close()  # no refill running behind the count
    assert _token_objects(softhsm_token) == before
    assert smtp_sink.received() == []
