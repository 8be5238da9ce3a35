"""PKCS#11 plumbing: a locked, reference-counted session pool per (module, token).

python-pkcs11 sessions must not be shared between threads, and PKCS#11 login state belongs to
the whole application, not to one session. Worse, python-pkcs11 always calls
``C_Initialize(NULL)``, which by the standard promises the module that no two threads call it
at once; SoftHSM2 then switches its own locking off (and crashes on concurrent calls). So every
call into a module goes through that module's lock (:func:`module_lock`): operations are safe
from any number of threads and asyncio worker threads, and run one at a time per module.

Each pool keeps one *anchor* session that logs in (opened when the pool is created, so a wrong
PIN fails at start-up) and hands out up to ``size`` plain R/W sessions, one per operation
(``pool.run(action, fn)``). Backends on the same token share a pool; the last one to close it
logs out. :func:`finalize_module` closes every pool of a module and runs ``C_Finalize`` so the
next use re-reads ``SOFTHSM2_CONF``.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from pkcs11 import exceptions as px

from ca.keys.errors import DecryptionFailed, KeyBackendError, TokenUnavailable

T = TypeVar("T")

_REASONS: dict[type[px.PKCS11Error], str] = {
    px.PinIncorrect: "the PIN was refused",
    px.PinLocked: "the PIN is locked after too many wrong tries; the SO must reset it",
    px.PinExpired: "the PIN has expired",
    px.UserPinNotInitialized: "the token has no user PIN yet (initialise it first)",
    px.NoSuchToken: "no token with this label is present in the module",
    px.MultipleTokensReturned: "several tokens carry this label",
    px.TokenNotPresent: "the token is not present",
    px.DeviceRemoved: "the token was removed",
    px.TokenWriteProtected: "the token is write-protected",
    px.UserNotLoggedIn: "the session is not logged in",
    px.SessionHandleInvalid: "the session is gone (the token was reset)",
    px.SessionClosed: "the session was closed (the token was reset)",
    px.ObjectHandleInvalid: "the key object is gone (the token's objects were replaced)",
    px.KeyHandleInvalid: "the key object is gone (the token's objects were replaced)",
    px.MechanismInvalid: "the token does not support this mechanism",
    px.MechanismParamInvalid: "the token rejected the mechanism parameters",
    px.KeySizeRange: "the token does not support this key size",
    px.DeviceMemory: "the token is out of memory",
    px.SessionCount: "the token has no free sessions",
    px.AttributeSensitive: "the attribute is sensitive and cannot be read",
    px.KeyUnextractable: "the key is not extractable",
    px.DataLenRange: "the data has the wrong length for this key",
    px.FunctionFailed: "the token failed to perform the function",
}

# Errors after which a session, the login or the objects looked up in it are gone (an HSM
# that restarted, a token removed and put back, key objects deleted and restored): close every
# session, log in again, look the key up again and retry the operation once.
_RESET_ERRORS = (
    px.SessionHandleInvalid,
    px.SessionClosed,
    px.UserNotLoggedIn,
    px.ObjectHandleInvalid,
    px.KeyHandleInvalid,
    px.DeviceRemoved,
    px.TokenNotPresent,
)


def readable(ex: BaseException, action: str, token_label: str) -> KeyBackendError:
    """A KeyBackendError with a sentence for a PKCS#11 (or loader) error; raise it ``from ex``."""
    if isinstance(ex, px.EncryptedDataInvalid | px.EncryptedDataLenRange):
        return DecryptionFailed(f"decryption failed on token {token_label!r}: wrong key or data")
    reason = next((r for cls, r in _REASONS.items() if isinstance(ex, cls)), None)
    if reason is None:
        detail = str(ex).strip()
        reason = f"{type(ex).__name__}{': ' + detail if detail else ''}"
    return KeyBackendError(f"PKCS#11 {action} failed on token {token_label!r}: {reason}")


@dataclass(eq=False)
class PooledSession:
    """One open session plus the key objects already looked up in it."""

    session: Any  # pkcs11.Session
    generation: int = 0
    cache: dict[tuple[str, int], Any] = field(default_factory=dict)


class SessionPool:
    """Up to ``size`` concurrent sessions on one token, all riding on one login."""

    def __init__(self, module_path: str, token_label: str, pin: str, size: int) -> None:
        if size < 1:
            raise KeyBackendError("the PKCS#11 session pool needs at least one session")
        self.module_path = module_path
        self.token_label = token_label
        self.size = size
        self.wait_timeout = 30.0
        self._pin = pin
        self._cond = threading.Condition()
        self._idle: list[PooledSession] = []
        self._busy = 0
        self._anchor: Any = None
        self._token: Any = None
        self._refs = 0
        self._closed = False
        self.generation = 0  # bumped on delete: cached key objects become stale
        self._login()

    # -- login / logout ---------------------------------------------------------------
    def _login(self) -> None:
        try:
            with module_lock(self.module_path):
                lib = pkcs11.lib(self.module_path)
                self._token = lib.get_token(token_label=self.token_label)
                self._anchor = self._token.open(rw=True, user_pin=self._pin)
        except px.PKCS11Error as ex:
            raise readable(ex, "login", self.token_label) from ex

    def _drop_all(self) -> None:
        """Close idle sessions and the anchor (logout); errors are moot at this point."""
        for pooled in self._idle:
            _quiet_close(pooled.session)
        self._idle.clear()
        if self._anchor is not None:
            _quiet_close(self._anchor)
            self._anchor = None

    def pin_matches(self, pin: str) -> bool:
        return hmac.compare_digest(self._pin.encode(), pin.encode())

    # -- checkout ---------------------------------------------------------------------
    def _checkout(self) -> PooledSession:
        pooled: PooledSession | None
        with self._cond:
            while True:
                if self._closed:
                    raise KeyBackendError(f"the key backend for {self.token_label!r} is closed")
                if self._idle:
                    pooled = self._idle.pop()
                    break
                if self._busy + len(self._idle) < self.size:
                    pooled = None
                    break
                if not self._cond.wait(self.wait_timeout):
                    raise KeyBackendError(
                        f"all {self.size} sessions on token {self.token_label!r} stayed busy"
                        f" for {self.wait_timeout:.0f} s"
                    )
            self._busy += 1
            if self._anchor is None:  # re-login after a reset
                try:
                    self._login()
                except KeyBackendError as ex:
                    self._busy -= 1
                    raise TokenUnavailable(str(ex)) from ex
        if pooled is None:
            try:
                pooled = PooledSession(self._token.open(rw=True))
            except px.PKCS11Error as ex:
                self._give_back(None)
                raise readable(ex, "open session", self.token_label) from ex
        if pooled.generation != self.generation:
            pooled.cache.clear()
            pooled.generation = self.generation
        return pooled

    def _give_back(self, pooled: PooledSession | None) -> None:
        with self._cond:
            self._busy -= 1
            if pooled is not None:
                if self._closed:
                    _quiet_close(pooled.session)
                else:
                    self._idle.append(pooled)
            self._cond.notify()

    @contextmanager
    def session(self) -> Iterator[PooledSession]:
        """One session for one operation; a broken session is closed, not returned."""
        pooled = self._checkout()
        try:
            yield pooled
        except _RESET_ERRORS:
            _quiet_close(pooled.session)
            self._give_back(None)
            self._reset()
            raise
        except BaseException:
            self._give_back(pooled)
            raise
        self._give_back(pooled)

    def _reset(self) -> None:
        with self._cond:
            self._drop_all()
            self.generation += 1

    def run(self, action: str, fn: Callable[[PooledSession], T]) -> T:
        """``fn(session)`` with PKCS#11 errors re-raised readable; retried once after a reset."""
        for attempt in (1, 2):
            try:
                with module_lock(self.module_path), self.session() as pooled:
                    return fn(pooled)
            except _RESET_ERRORS as ex:
                if attempt == 2:
                    reason = readable(ex, action, self.token_label)
                    raise TokenUnavailable(f"{reason}, also after re-opening the sessions") from ex
            except px.PKCS11Error as ex:
                raise readable(ex, action, self.token_label) from ex
        raise AssertionError("unreachable")  # pragma: no cover

    def invalidate_cache(self) -> None:
        with self._cond:
            self.generation += 1

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Close idle sessions and log out; sessions still busy are closed on return."""
        with module_lock(self.module_path), self._cond:
            self._closed = True
            self._drop_all()
            self._cond.notify_all()


def _quiet_close(session: Any) -> None:
    try:
        session.close()
    except px.PKCS11Error:
        pass  # already gone (token removed, library finalized): nothing left to release


_registry: dict[tuple[str, str], SessionPool] = {}
_registry_lock = threading.Lock()
_module_locks: dict[str, threading.RLock] = {}
_module_locks_lock = threading.Lock()


def module_lock(module_path: str) -> threading.RLock:
    """The lock every call into ``module_path`` must hold (see the module docstring)."""
    real = os.path.realpath(module_path)
    with _module_locks_lock:
        lock = _module_locks.get(real)
        if lock is None:
            lock = _module_locks[real] = threading.RLock()
        return lock


def acquire_pool(module_path: str, token_label: str, pin: str, size: int) -> SessionPool:
    """The shared pool for (module, token), created and logged in on first use."""
    key = (os.path.realpath(module_path), token_label)
    with _registry_lock:
        pool = _registry.get(key)
        if pool is None:
            pool = SessionPool(key[0], token_label, pin, size)
            _registry[key] = pool
        elif not pool.pin_matches(pin):
            raise KeyBackendError(f"a different PIN is already in use for token {token_label!r}")
        pool._refs += 1
        return pool


def release_pool(pool: SessionPool) -> None:
    """Drop one reference; the last one closes the sessions and logs out."""
    with _registry_lock:
        pool._refs -= 1
        if pool._refs > 0:
            return
        key = (pool.module_path, pool.token_label)
        if _registry.get(key) is pool:
            del _registry[key]
    pool.close()


def finalize_module(module_path: str) -> None:
    """Close every pool on ``module_path`` and ``C_Finalize`` it (tests, process shutdown).

    python-pkcs11 caches a loaded module per path; after this the next ``pkcs11.lib()`` call
    runs ``C_Initialize`` again, which makes SoftHSM re-read ``SOFTHSM2_CONF``.
    """
    real = os.path.realpath(module_path)
    with _registry_lock:
        pools = [p for k, p in _registry.items() if k[0] == real]
        for pool in pools:
            del _registry[(pool.module_path, pool.token_label)]
    for pool in pools:
        pool.close()
    loaded: dict[str, Any] = getattr(pkcs11, "_loaded", {})
    with module_lock(real):
        for path in (real, module_path):
            lib = loaded.get(path)
            if lib is not None and lib.initialized:
                try:
                    lib.finalize()
                except px.PKCS11Error as ex:
                    raise readable(ex, "finalize", path) from ex


def module_initialized(module_path: str) -> bool:
    """Whether python-pkcs11 holds ``module_path`` loaded and initialised."""
    loaded: dict[str, Any] = getattr(pkcs11, "_loaded", {})
    libs = [loaded.get(p) for p in (os.path.realpath(module_path), module_path)]
    return any(lib is not None and lib.initialized for lib in libs)
