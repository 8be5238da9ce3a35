"""Enrolling internal senders at the CA on their first message (the certificate broker).

:class:`gateway.broker.enrolling.EnrollingCertificates` wraps the pipeline's
:class:`~gateway.pipeline.Certificates`:
``signing_identity(email)`` answers from the store as before and, for an internal sender with
no valid signing certificate (when ``getFromPKIForNewIntUsers`` is on), enrols now and returns
the new identity, so that very message is signed.  :class:`Enroller` does the work:

1. a key pair in the users' key backend: taken from the :class:`~gateway.broker.keypool.KeyPool`
   when one is configured (label ``pool:...``), else generated as ``user:<email>:<n>``;
   recorded in the address's state file first (:mod:`gateway.broker.keys`);
2. a PKCS#10 request with subject and SAN from ``pki.subject_for(email, display_name)``.
   The pipeline passes the From header's display name (``signing_identity(email,
   display_name=...)``): a Gold product's CN; Gold without one is not enrolled;
3. a Full PKI Request through the CMC client (issuer checked against ``issuerDN``, chain and
   response signature validated there), in a worker thread; recorded before it is sent;
4. the certificate stored with source ``pki`` and its key label; the chain as CA material.

Single flight: one enrolment per address at a time.  Callers for an address with a job in
flight share its outcome (a ``concurrent.futures.Future``, so several event loops and plain
threads may wait on it); across processes (``cmcgate.gateway.workers``) a job runs under the
address's lock file in the state directory; and a job re-checks the store before it contacts
the CA, so a burst of messages from a new user makes exactly one order.

Outcomes, as the pipeline sees them:

* issued: a :class:`~gateway.pipeline.SigningIdentity`;
* ``pending`` (manual approval): :class:`EnrolmentPending`, a ``TemporaryFailure``: the
  message gets 451 and the client retries; the :class:`~cmc.client.PendingEnrollment` is
  kept and :meth:`Enroller.poll_pending` (run by the scheduler) finishes it.  Messages in
  between do not contact the CA.  (The pipeline turns a ``TemporaryFailure`` into 451 only
  under sign=always; under sign=allow the mail goes unsigned meanwhile.);
* no answer (CA unreachable, connection broken after the request left, read timeout, 5xx,
  the gateway died meanwhile): ``TemporaryFailure`` (451); the key and the request sent are
  kept, and the next attempt (or the background poll) sends that very request again: the CA
  answers it from what it did (the certificate it issued, see :mod:`ca.service.replay`) instead
  of issuing a second one;
* ``tryLater``: 451; the key is kept, the next attempt sends a new request with it;
* refused for good (``CMCFailure``, a response that fails validation, a subject that cannot
  be built): :class:`EnrolmentRefused`; ``EnrollingCertificates`` logs it and answers None
  (the policy then decides: sign=always refuses the message, sign=allow sends it unsigned).
  The refusal is remembered for ``refusal_backoff`` so the CA is not asked for every mail.

State: one JSON file per address, see :mod:`gateway.broker.state` (written atomically:
temporary file, fsync, rename) holding the key label in use, the request sent and, when
pending, the ``PendingEnrollment``; removed once the certificate is stored.  With
``publication`` (an external PKI and ``cmcgate.publish.ldap.*``), each stored certificate is
then published to LDAP, best effort and off the mail's path: see :mod:`gateway.broker.publication`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.keys import KeyBackendError, KeyNotFound, PrivateKeyHandle
from cmc.client import CmcClient, EnrollmentPending, EnrollmentResult, PendingEnrollment, classify
from cmc.errors import CMCTryLater, TemporaryFailure
from config.errors import CmcgateError
from config.model import EnrolmentSettings, PkiConnection
from gateway.broker.keypool import KeyPool
from gateway.broker.keys import recorded_new_key
from gateway.broker.publication import Publication
from gateway.broker.state import EnrolmentState, StateFiles
from gateway.certs.keystore import KeyStore, KeyStoreError
from gateway.certs.models import CertificateRecord, Source, StoreError, normalise_email
from gateway.certs.store import CertStore
from gateway.certs.view import SigningIdentity
from gateway.smime.sign import SignKey

log = logging.getLogger("cmcgate.gateway.enrolment")


class EnrolmentPending(TemporaryFailure):
    """The CA holds the request for approval; the message is retried later (451)."""

    def __init__(self, email: str, detail: str | None = None) -> None:
        self.email = email
        super().__init__(f"enrolment of {email} is waiting for approval at the CA"
                         + (f" ({detail})" if detail else ""))  # fmt: skip


class EnrolmentRefused(CmcgateError):
    """The CA (or our checks of its answer) refused the enrolment: retrying will not help."""


# -- the enroller ---------------------------------------------------------------------------
@dataclass
class PollReport:
    issued: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Enroller:
    """Enrols addresses at the configured PKI; see the module docstring.

    ``client_factory`` makes a CMC client (e.g. ``lambda: client_from_config(pki)``); each
    worker thread keeps its own (a transport is one HTTP session per thread) and drops it
    after a temporary failure.  ``pool``: pre-generated keys (by default one of
    ``settings.key_pool_size`` when that is > 0).  Call :meth:`start` to run the pool's
    refiller and :meth:`close` at the end.
    """

    def __init__(
        self,
        store: CertStore,
        keys: KeyStore,
        client_factory: Callable[[], CmcClient],
        pki: PkiConnection,
        settings: EnrolmentSettings | None = None,
        *,
        state_dir: Path,
        pool: KeyPool | None = None,
        clock: Callable[[], datetime] | None = None,
        workers: int = 4,
        refusal_backoff: timedelta = timedelta(hours=1),
        publication: Publication | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.client_factory = client_factory
        self.pki = pki
        self.settings = settings or EnrolmentSettings()
        self.state = StateFiles(Path(state_dir) / "enrolments")
        if pool is None and self.settings.key_pool_size > 0:
            pool = KeyPool(
                keys,
                self.settings.key_pool_size,
                self.settings.key_type,
                claims_dir=Path(state_dir) / "pool-claims",
            )
        self.pool = pool
        self.clock = clock or (lambda: datetime.now(UTC))
        self.refusal_backoff = refusal_backoff
        self.publication = publication
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "enrol")
        self._inflight: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.RLock()
        self._local = threading.local()
        self._refused: dict[str, tuple[datetime, str]] = {}

    @property
    def enabled(self) -> bool:
        return self.pki.enrol_internal_users

    def start(self) -> Enroller:
        if self.pool is not None:
            self.pool.start()
        return self

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        self._executor.shutdown(wait=True)

    # -- entry points ------------------------------------------------------------------------
    async def enrol_async(self, email: str, display_name: str | None = None) -> SigningIdentity:
        future = self._submit(email, lambda e: self._enrol(e, display_name, None, None))
        return cast(SigningIdentity, await asyncio.shield(asyncio.wrap_future(future)))

    def enrol(self, email: str, display_name: str | None = None) -> SigningIdentity:
        """Blocking :meth:`enrol_async` (scheduler jobs, benchmarks)."""
        future = self._submit(email, lambda e: self._enrol(e, display_name, None, None))
        return cast(SigningIdentity, future.result())

    def renew(self, email: str, old: CertificateRecord, at: datetime) -> SigningIdentity:
        """Enrol ``email`` again with a new key because ``old`` expires soon (blocking)."""
        display = _common_name(old.certificate)
        future = self._submit(email, lambda e: self._enrol(e, display, old, at))
        return cast(SigningIdentity, future.result())

    def poll_pending(self) -> PollReport:
        """Ask the CA about every pending enrolment and every request whose answer was lost;
        store what was issued (blocking)."""
        report = PollReport()
        if self.publication is not None:
            self.publication.retry()
        jobs = {}
        for email in self.state.emails():
            try:
                state = self.state.load(email)
            except TemporaryFailure as exc:
                report.failed[email] = str(exc)
                continue
            if state is not None and (state.pending is not None or state.sent is not None):
                jobs[email] = self._submit(email, self._poll)  # pending, or answer lost
        for email, job in jobs.items():
            try:
                job.result()
                report.issued.append(email)
            except EnrolmentPending:
                report.pending.append(email)
            except Exception as exc:  # noqa: BLE001 - reported, retried at the next poll
                report.failed[email] = f"{type(exc).__name__}: {exc}"
        if jobs:
            log.info("poll: issued %s, pending %s, failed %s",
                     report.issued, report.pending, report.failed)  # fmt: skip
        return report

    # -- single flight ---------------------------------------------------------------------
    def _submit(
        self, email: str, job: Callable[[str], SigningIdentity]
    ) -> concurrent.futures.Future[Any]:
        try:
            key = normalise_email(email)
        except StoreError as exc:
            raise EnrolmentRefused(str(exc)) from exc
        with self._lock:
            future = self._inflight.get(key)
            if future is None:
                future = self._executor.submit(self._serialised, job, key)
                self._inflight[key] = future
                future.add_done_callback(lambda f: self._forget(key, f))
            return future

    def _serialised(self, job: Callable[[str], SigningIdentity], email: str) -> SigningIdentity:
        """``job`` under the address's lock file: other processes (the gateway's workers)
        wait for it, then find its certificate in the store (every job re-checks first)."""
        with self.state.locked(email):
            return job(email)

    def _forget(self, key: str, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._inflight.get(key) is future:
                del self._inflight[key]

    # -- the work (worker threads) -----------------------------------------------------------
    def _enrol(
        self,
        email: str,
        display_name: str | None,
        renewing: CertificateRecord | None,
        at: datetime | None,
    ) -> SigningIdentity:
        now = at or self.clock()
        done = self._already_done(email, renewing, now)
        if done is not None:
            return done
        refused = self._refused.get(email)
        if refused is not None and now < refused[0] and renewing is None:
            raise EnrolmentRefused(f"enrolment of {email} was refused recently: {refused[1]}")
        state = self.state.load(email)
        if state is not None and state.pending is not None:
            raise EnrolmentPending(email, "request sent earlier")
        key = self._load_key(state.key_label) if state is not None else None
        if state is not None and key is not None and state.sent is not None:
            return self._ask_again(state, key)  # its answer was lost: the same transaction
        if state is None or key is None:
            started = EnrolmentState(email, "", now, None,
                                     renewing.fingerprint if renewing else None)  # fmt: skip
            state, key = recorded_new_key(
                self.state, self.keys, self.pool, self.settings.key_type, started
            )
        try:
            subject, emails = self.pki.subject_for(email, display_name)
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(subject)
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]),
                    critical=False,
                )
                .sign(cast(SignKey, key), hashes.SHA256())
            )
        except CmcgateError as exc:
            self._give_up(state, exc)
            raise EnrolmentRefused(f"no certificate request for {email}: {exc}") from exc

        def send(client: CmcClient) -> EnrollmentResult:
            prepared = client.prepare_enrollment(csr, key)
            state.sent = prepared.to_dict()
            self.state.save(state)  # before it leaves: a lost answer is asked for again
            return client.poll(prepared, key=key)

        return self._exchange(state, key, send)

    def _poll(self, email: str) -> SigningIdentity:
        state = self.state.load(email)
        if state is None or (state.pending is None and state.sent is None):
            record = self.store.best_for_signing(email, at=self.clock())
            if record is None:
                raise EnrolmentRefused(f"nothing pending for {email}")
            return self._identity(record)
        key = self._load_key(state.key_label)
        if key is None:
            exc = EnrolmentRefused(f"key {state.key_label} of {email}'s pending request is gone")
            self._give_up(state, exc)
            raise exc
        return self._ask_again(state, key)

    def _ask_again(self, state: EnrolmentState, key: PrivateKeyHandle) -> SigningIdentity:
        """The CA about the request sent earlier: a queryPending when it answered pending,
        else that request once more (the CA answers a request it issued with the same
        certificate, see :mod:`ca.service.replay`)."""
        try:
            earlier = PendingEnrollment.from_dict(state.pending or state.sent or {})
        except (ValueError, KeyError, TypeError) as exc:
            refused = EnrolmentRefused(f"{state.email}'s recorded request is damaged: {exc}")
            self._give_up(state, refused)
            raise refused from exc
        return self._exchange(state, key, lambda client: client.poll(earlier, key=key))

    def _exchange(
        self,
        state: EnrolmentState,
        key: PrivateKeyHandle,
        call: Callable[[CmcClient], EnrollmentResult],
    ) -> SigningIdentity:
        email = state.email
        try:
            result = call(self._client())
        except EnrollmentPending as exc:
            state.pending, state.sent = exc.pending.to_dict(), None
            self.state.save(state)
            log.info("enrolment of %s is pending at the CA (transaction %d)",
                     email, exc.pending.transaction_id)  # fmt: skip
            raise EnrolmentPending(email, exc.pending.status_string) from None
        except Exception as exc:
            if classify(exc) == "permanent":
                self._give_up(state, exc)
                raise EnrolmentRefused(f"the CA refused to enrol {email}: {exc}") from exc
            self._drop_client()
            if isinstance(exc, CMCTryLater) and state.sent is not None:
                self._forget_sent(state)  # the CA answered tryLater: a new request next time
            log.warning("enrolment of %s failed for now (key %s kept): %s",
                        email, state.key_label, exc)  # fmt: skip
            if isinstance(exc, TemporaryFailure):
                raise
            raise TemporaryFailure(f"enrolment of {email}: {type(exc).__name__}: {exc}") from exc
        return self._finish(state, key, result)

    def _finish(
        self, state: EnrolmentState, key: PrivateKeyHandle, result: EnrollmentResult
    ) -> SigningIdentity:
        try:
            record = self.store.add(result.certificate, Source.PKI, key_label=state.key_label)
            self.store.add_chain(list(result.chain))
        except StoreError as exc:
            raise TemporaryFailure(f"cannot store {state.email}'s new certificate: {exc}") from exc
        self.state.remove(state.email)
        self._refused.pop(state.email, None)
        self._publish(state.email, result.certificate)
        log.info("enrolled %s: serial %s, key %s%s", state.email, record.serial,
                 state.key_label, " (renewal)" if state.renewing else "")  # fmt: skip
        chain = tuple(self.store.chain_for(record))
        return SigningIdentity(cast(SignKey, key), result.certificate, chain)

    def _publish(self, email: str, cert: x509.Certificate) -> None:
        """Queue LDAP publication as a task of its own: the waiting mail goes on meanwhile."""
        if self.publication is not None:
            der = cert.public_bytes(Encoding.DER)
            self.publication.record(email, der)
            try:
                self._executor.submit(self.publication.attempt, email, der)
            except RuntimeError:  # shutting down: poll_pending's retry after the restart
                pass

    def _forget_sent(self, state: EnrolmentState) -> None:
        state.sent = None
        try:
            self.state.save(state)
        except TemporaryFailure as exc:  # not fatal: the next attempt resends the request
            log.warning("enrolment of %s: %s", state.email, exc)

    def _give_up(self, state: EnrolmentState, exc: BaseException) -> None:
        """A permanent refusal: forget the attempt and destroy its key (never used)."""
        log.error("enrolment of %s refused: %s", state.email, exc)
        self.state.remove(state.email)
        self._refused[state.email] = (self.clock() + self.refusal_backoff, str(exc))
        try:
            self.keys.delete(state.key_label)
        except (KeyNotFound, KeyBackendError) as err:
            log.warning("could not delete unused key %s: %s", state.key_label, err)

    # -- helpers -----------------------------------------------------------------------------
    def _already_done(
        self, email: str, renewing: CertificateRecord | None, now: datetime
    ) -> SigningIdentity | None:
        """The identity when another job got there first (so no second order)."""
        if renewing is None:
            record = self.store.best_for_signing(email, at=now)
            return None if record is None else self._identity(record)
        newer = [
            r
            for r in self.store.find(email=email, source=Source.PKI)
            if r.key_label is not None
            and r.fingerprint != renewing.fingerprint
            and (r.not_after, r.added_at) >= (renewing.not_after, renewing.added_at)
        ]
        newest = max(newer, key=lambda r: (r.not_after, r.added_at), default=None)
        return None if newest is None else self._identity(newest)

    def _identity(self, record: CertificateRecord) -> SigningIdentity:
        try:
            key = self.keys.key_for(record)
        except KeyStoreError as exc:
            raise TemporaryFailure(str(exc)) from exc
        return SigningIdentity(
            cast(SignKey, key), record.certificate, tuple(self.store.chain_for(record))
        )

    def _load_key(self, label: str) -> PrivateKeyHandle | None:
        try:
            return self.keys.backend.load(label)
        except KeyNotFound:
            return None

    def _client(self) -> CmcClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.client_factory()
            self._local.client = client
        return cast(CmcClient, client)

    def _drop_client(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            client.close()


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None
