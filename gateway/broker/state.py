"""The enroller's state on disk: one JSON file per address under ``<state_dir>/enrolments/``.

A file exists while an enrolment is under way.  It names the key the request certifies,
written *before* the key is made (so a key is never made for an enrolment that cannot be
recorded) and reused by every retry; ``sent``, the request itself
(:meth:`cmc.client.CmcClient.prepare_enrollment`), written *before* it leaves, so that when
its answer is lost (connection broken, read timeout, the gateway died) the retry asks about
the same transaction instead of ordering a second certificate; and, when the CA answered
``pending``, the :class:`~cmc.client.PendingEnrollment`
(:meth:`~cmc.client.PendingEnrollment.to_dict`) that the background poll resumes.  It is
removed once the certificate is stored.  Writes are atomic (temporary file, fsync, rename,
fsync of the directory); file names are the address, percent-encoded.  Kept out of the
certificate store on purpose: it is the enroller's scratch state, not certificates.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cmc.errors import TemporaryFailure


@dataclass
class EnrolmentState:
    """What must survive a restart while an enrolment is under way."""

    email: str
    key_label: str
    started: datetime
    pending: dict[str, Any] | None = None
    renewing: str | None = None  # fingerprint of the certificate being renewed
    sent: dict[str, Any] | None = None  # the request sent, not answered (yet)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "started": self.started.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnrolmentState:
        return cls(**{**data, "started": datetime.fromisoformat(data["started"])})


class StateFiles:
    """One JSON file per address under ``directory``; atomic writes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, email: str) -> Path:
        return self.directory / (quote(email, safe="@.-_+") + ".json")

    def load(self, email: str) -> EnrolmentState | None:
        path = self._path(email)
        try:
            return EnrolmentState.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TemporaryFailure(f"{path}: enrolment state unreadable: {exc}") from exc

    def save(self, state: EnrolmentState) -> None:
        path = self._path(state.email)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "w") as handle:
                json.dump(state.to_json(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a full disk keeps no half-written leftovers
            raise TemporaryFailure(f"{path}: cannot write enrolment state: {exc}") from exc

    @contextmanager
    def locked(self, email: str) -> Iterator[None]:
        """Hold ``email``'s lock file (``flock``): one enrolment per address across every
        process that shares this directory (the gateway's workers, a second gateway).  The
        kernel drops the lock when its holder dies; the empty ``.lock`` files stay."""
        path = self._path(email).with_suffix(".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TemporaryFailure(f"{path}: cannot open enrolment lock: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def remove(self, email: str) -> None:
        self._path(email).unlink(missing_ok=True)

    def emails(self) -> list[str]:
        return sorted(unquote(p.name[: -len(".json")]) for p in self.directory.glob("*.json"))
