"""Fixtures shared by the CA's tests: a fresh SQLite order store in a temp dir; a CA made
by ``ca init`` with the RA's PKCS#12 products (:func:`tests.ca.ra_p12_support.make_ca_dir`),
opened (the RA's key generation, renewal and clean-up tests; a module may define its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ca.authority import CertificateAuthority
from ca.store.orders import Store
from tests.ca.ra_p12_support import make_ca_dir


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ca.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store.open(f"sqlite:///{db_path}")
    s.create_all()
    return s


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    make_ca_dir(directory)
    return directory


@pytest.fixture
def ca(ca_dir: Path) -> Iterator[CertificateAuthority]:
    with CertificateAuthority.open(ca_dir / "ca.yaml") as authority:
        yield authority
