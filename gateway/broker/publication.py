"""Publishing the certificates the gateway enrols to an internal LDAP directory.

With an external PKI (``cmcgate.publish.ldap.*`` configured) nobody else puts the users'
new certificates into the company directory, so the :class:`~gateway.broker.enrolment.Enroller`
records each certificate it has just stored (:meth:`Publication.record`) and queues
:meth:`Publication.attempt` on its worker threads as a task of its own, so the message that
caused the enrolment is signed and relayed without waiting for LDAP, whatever LDAP does.

Best effort that loses nothing: a small JSON file ``<state_dir>/publish/<fingerprint>.json``
(address and DER) is written *before* the directory is asked and removed once it holds the
certificate.  When the directory is down, slow or refuses, the failure is logged and
:meth:`Publication.retry` (called by every ``Enroller.poll_pending`` run, i.e. by the
background scheduler) tries the files left again.  The directory writing itself is
:class:`ca.publish.ldapwrite.DirectoryWriter`, shared with the bundled CA's publisher: the entries
with that ``mail`` under the base DN get the value in ``userCertificate;binary``, or
``mail=<address>,<base>`` is created as an ``inetOrgPerson``.

The bundled CA publishes by itself (products with ``publish_ldap: true``); configure this
only for a PKI that does not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from ca.publish import DirectoryWriter, LdapUnavailable
from config.errors import CmcgateError, SecretError
from config.model import PublishSettings
from config.redact import redact_url

log = logging.getLogger("cmcgate.gateway.publication")


def writer_for(settings: PublishSettings) -> DirectoryWriter:
    """The :class:`DirectoryWriter` of ``cmcgate.publish.ldap.*`` (password read per connect)."""

    def password() -> str | None:
        if settings.password is None:
            return None
        try:
            return settings.password.read().decode("utf-8")
        except (SecretError, UnicodeDecodeError) as exc:
            raise LdapUnavailable(f"LDAP bind password ({settings.password.describe()}): {exc}")

    return DirectoryWriter(
        settings.url,
        settings.base,
        bind_dn=settings.bind_dn,
        password=password,
        connect_timeout=settings.timeout,
        receive_timeout=settings.timeout,
    )


class Publication:
    """Certificates to put into ``writer``'s directory; pending ones kept under ``state_dir``."""

    def __init__(self, writer: DirectoryWriter, state_dir: Path) -> None:
        self.writer = writer
        self.directory = Path(state_dir) / "publish"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one retry run at a time

    def record(self, email: str, der: bytes) -> None:
        """Note ``der`` as to be published for ``email`` (before asking the directory)."""
        try:
            self._record(email, der)
        except OSError as exc:
            log.error("cannot record the publication of %s's certificate: %s", email, exc)

    def attempt(self, email: str, der: bytes) -> bool:
        """Publish a recorded certificate now; never raises.

        True when the directory holds it now; False when it waits for :meth:`retry`.
        """
        return self._try(email, der, self._path(der))

    def published(self, email: str, der: bytes) -> bool:
        """:meth:`record` and :meth:`attempt` in one (blocks for the directory)."""
        self.record(email, der)
        return self.attempt(email, der)

    def pending(self) -> list[tuple[str, bytes]]:
        """(address, DER) of every certificate still waiting for the directory."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                found.append((str(data["email"]), base64.b64decode(data["der"])))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s: unreadable publication record, skipped: %s", path, exc)
        return found

    def retry(self) -> tuple[int, int]:
        """Try every waiting certificate again: (published, still waiting); never raises."""
        if not self._lock.acquire(blocking=False):
            return 0, len(self.pending())
        try:
            waiting = self.pending()
            done = 0
            for index, (email, der) in enumerate(waiting):
                try:
                    self._publish(email, der)
                except LdapUnavailable as exc:
                    log.warning("LDAP publication of %d certificate(s) waits: %s",
                                len(waiting) - index, exc)  # fmt: skip
                    break
                except Exception as exc:  # noqa: BLE001 - kept for the next run
                    text = str(exc) if isinstance(exc, CmcgateError) else repr(exc)
                    log.error("LDAP publication of %s's certificate failed: %s", email, text)
                    continue
                done += 1
                self._path(der).unlink(missing_ok=True)
            if done:
                log.info(
                    "published %d waiting certificate(s) to %s", done, redact_url(self.writer.url)
                )
            return done, len(waiting) - done
        finally:
            self._lock.release()

    # -- internals ---------------------------------------------------------------------------
    def _try(self, email: str, der: bytes, path: Path) -> bool:
        try:
            self._publish(email, der)
        except CmcgateError as exc:
            log.warning("LDAP publication of %s's certificate failed, retried later: %s",
                        email, exc)  # fmt: skip
            return False
        except Exception as exc:  # noqa: BLE001 - publication never breaks enrolment
            log.error("LDAP publication of %s's certificate failed, retried later: %r",
                      email, exc)  # fmt: skip
            return False
        path.unlink(missing_ok=True)
        return True

    def _publish(self, email: str, der: bytes) -> None:
        entries = self.writer.publish(email, der)
        log.info("published %s's certificate to %s", email, ", ".join(entries))

    def _path(self, der: bytes) -> Path:
        return self.directory / (hashlib.sha256(der).hexdigest() + ".json")

    def _record(self, email: str, der: bytes) -> Path:
        path = self._path(der)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "w") as handle:
            json.dump({"email": email, "der": base64.b64encode(der).decode("ascii")}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path


__all__ = ["Publication", "writer_for"]
