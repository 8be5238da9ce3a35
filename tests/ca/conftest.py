"""Fixtures shared by the CA's store tests: a fresh SQLite order store in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca.store.orders import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ca.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = Store.open(f"sqlite:///{db_path}")
    s.create_all()
    return s
