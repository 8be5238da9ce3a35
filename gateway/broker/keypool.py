"""Key pairs generated ahead of time, so that a first send does not wait for key generation.

RSA-3072 generation takes a few hundred milliseconds in software and longer on many HSMs;
with ``cmcgate.enrolment.keyPoolSize`` > 0 the gateway keeps that many spare key pairs in the
users' key backend and an enrolment *takes* one instead of generating.

Labels.  :class:`~ca.keys.KeyBackend` has no rename, so a pooled key cannot become
``user:<email>:<n>`` when it is handed out.  Pooled keys are therefore generated under pool
labels, ``pool:<key type>:<32 hex digits>``, and keep that label for life: the certificate
store's ``key_label`` of the certificate enrolled with it is the mapping from the user to the
key (``KeyStore.key_for`` loads by that label; nothing looks pooled keys up by address).

Claims.  Taking a key writes a claim file ``<claims_dir>/<label>`` with ``O_EXCL`` (content:
the address it went to, for the operator), so a key is handed out once even when several
gateway processes share the key backend — as long as they share the claims directory too (it
lives under the gateway's state directory).  A pool key without a claim file is free; one
with a claim file is never offered again once its enrolment is recorded.  A key whose
enrolment could not even be recorded (a full state directory) is given back
(:meth:`KeyPool.give_back`): its claim is removed and the next enrolment takes it, instead
of each such message costing the pool a key.

Refilling runs in a daemon thread (:meth:`KeyPool.start`) that wakes whenever a key is taken
and otherwise every few minutes, and generates only once no key has been taken for ``quiet``
seconds (default 1): key generation competes for CPU (or HSM) with the enrolments of a burst,
which is what the pool is there to speed up.  :meth:`KeyPool.refill` can be called directly.
An empty pool is not an error: :meth:`KeyPool.take` returns None and the caller generates
on the spot.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from ca.keys import KeyBackendError, KeyExists, KeyNotFound, KeyType, PrivateKeyHandle
from config.errors import CmcgateError
from gateway.certs.keystore import KeyStore

log = logging.getLogger("cmcgate.gateway.keypool")

POOL_PREFIX = "pool:"
REFILL_INTERVAL = 300.0
#: the background refill waits this long after the last take (bursts first, keys later)
QUIET_SECONDS = 1.0


class KeyPoolError(CmcgateError):
    """The key pool's claims directory cannot be used."""


def pool_label(key_type: KeyType) -> str:
    """``pool:rsa3072:5f0c...``: a fresh, unique pool label for ``key_type``."""
    return f"{POOL_PREFIX}{key_type.value}:{uuid.uuid4().hex}"


def is_pool_label(label: str) -> bool:
    return label.startswith(POOL_PREFIX)


class KeyPool:
    """``size`` spare keys of ``key_type`` in ``keys``' backend; thread-safe."""

    def __init__(
        self,
        keys: KeyStore,
        size: int,
        key_type: KeyType | str,
        *,
        claims_dir: Path,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        if size < 0:
            raise KeyPoolError(f"key pool size must be 0 or more, not {size}")
        self.keys = keys
        self.size = size
        self.key_type = KeyType.parse(key_type)
        self.claims_dir = Path(claims_dir)
        try:
            self.claims_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyPoolError(f"cannot create {self.claims_dir}: {exc.strerror}") from exc
        self._free: list[str] = []
        self._scanned = False
        self._lock = threading.Lock()
        self._refill_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.quiet = quiet
        self._last_take = 0.0
        self.taken = 0
        self.misses = 0

    # -- state ----------------------------------------------------------------------------
    @property
    def _prefix(self) -> str:
        return f"{POOL_PREFIX}{self.key_type.value}:"

    def _claim_path(self, label: str) -> Path:
        return self.claims_dir / quote(label, safe="")

    def _is_claimed(self, label: str) -> bool:
        return self._claim_path(label).exists()

    def _scan(self) -> None:
        """Find free pool keys already in the backend (left from an earlier run)."""
        found = [
            label
            for label in self.keys.backend.labels()
            if label.startswith(self._prefix) and not self._is_claimed(label)
        ]
        with self._lock:
            known = set(self._free)
            self._free.extend(label for label in found if label not in known)
            self._scanned = True

    def available(self) -> int:
        """Free keys known to this process."""
        with self._lock:
            return len(self._free)

    # -- taking ---------------------------------------------------------------------------
    def take(self, email: str) -> PrivateKeyHandle | None:
        """A free pool key, now claimed for ``email``; None when the pool is empty."""
        if not self._scanned:
            self._scan()
        try:
            while True:
                with self._lock:
                    if not self._free:
                        self.misses += 1
                        return None
                    label = self._free.pop(0)
                try:
                    claimed = self._claim(label, email)
                except KeyPoolError:
                    with self._lock:
                        self._free.insert(0, label)  # still free: the claim was not made
                    raise
                if not claimed:
                    continue  # another process took it
                try:
                    handle = self.keys.backend.load(label)
                except KeyNotFound:
                    continue
                self.taken += 1
                return handle
        finally:
            self._last_take = time.monotonic()
            self._wake.set()

    def _claim(self, label: str, email: str) -> bool:
        try:
            fd = os.open(self._claim_path(label), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            raise KeyPoolError(f"cannot claim pool key {label}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(email + "\n")
        except OSError as exc:  # e.g. a full disk: no claim rather than a half-written one
            self._claim_path(label).unlink(missing_ok=True)
            raise KeyPoolError(f"cannot claim pool key {label}: {exc.strerror}") from exc
        return True

    def give_back(self, label: str) -> None:
        """Free a key :meth:`take` handed out that was never used (its enrolment could not
        be recorded): its claim is removed and the next :meth:`take` hands it out again."""
        try:
            self._claim_path(label).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("pool key %s stays claimed (unused): %s", label, exc.strerror)
            return
        with self._lock:
            self._free.insert(0, label)
        self.taken -= 1

    # -- refilling ------------------------------------------------------------------------
    def refill(self, *, when_quiet: bool = False) -> int:
        """Generate keys until ``size`` are free; returns how many were generated.

        ``when_quiet``: generate only after ``quiet`` seconds without a take, so that key
        generation (CPU or HSM time) does not compete with the enrolments of a burst.
        """
        made = 0
        with self._refill_lock:
            if not self._scanned:
                self._scan()
            while not self._stop.is_set() and self.available() < self.size:
                idle = time.monotonic() - self._last_take
                if when_quiet and idle < self.quiet:
                    self._stop.wait(self.quiet - idle)
                    continue
                label = pool_label(self.key_type)
                try:
                    self.keys.backend.generate(label, self.key_type)
                except KeyExists:
                    continue
                with self._lock:
                    self._free.append(label)
                made += 1
        if made:
            log.info("key pool: generated %d %s key(s), %d free", made, self.key_type,
                     self.available())  # fmt: skip
        return made

    def start(self) -> KeyPool:
        """Refill in a daemon thread now, after every take and every few minutes."""
        if self._thread is None and self.size > 0:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="key-pool", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refill(when_quiet=True)
            except (KeyBackendError, CmcgateError, OSError) as exc:
                log.error("key pool refill failed (retried later): %s", exc)
            self._wake.wait(REFILL_INTERVAL)
            self._wake.clear()

    def wait_full(self, timeout: float = 30.0) -> bool:
        """Block until the pool holds ``size`` free keys (tests, benchmarks)."""
        deadline = threading.Event()
        for _ in range(int(timeout * 20)):
            if self.available() >= self.size:
                return True
            deadline.wait(0.05)
        return self.available() >= self.size

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
