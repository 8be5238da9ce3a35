"""Totemo's ``issuerDN``: the CA a certificate from the connected PKI must come from.

SwissSign's guide and ``swisssign.properties`` put a *root* DN there
(``CN=SwissSign RSA SMIME Root CA 2022 - 1,...``), while end-entity certificates are issued
by an issuing CA below it.  So ``issuerDN`` matches when it names **any CA on the
certificate's issuer chain**: the direct issuer, an intermediate, or the trust anchor (root)
the chain ends at.  The chain is the one the response was validated with
(:func:`cmc.messages.chain.verify_chain`), continued upwards through the other trusted certificates
when it ended at an anchor that is not self-signed (an issuing CA imported as trusted).

Names match when they have the same attribute types in the same order and equal values,
compared case-insensitively with white space collapsed (RFC 5280 §7.1, simplified): the DN
is typed by an administrator, the certificate's by the CA.

**Before a request is sent** (:meth:`IssuerChains.check_before_sending`) the client refuses
one whose certificate could not be kept, so that no certificate is issued that nobody holds.
This is possible when the chain the CA issues under is known in advance:

* from the CA certificates the client is configured with — the trusted-roots file holding
  more than self-signed roots (Totemo: the *Issuer certificates* SwissSign provides; for the
  bundled CA ``ca-chain.pem``), or
* from an earlier issuance answer of this CA (remembered by the :class:`IssuerChains`, which
  the gateway shares among its CMC clients; in memory, from the process start).

``issuerDN`` naming none of those certificates (nor a configured root) is then refused with
:class:`~cmc.errors.IssuerMismatch` before anything is sent.  With only self-signed roots
configured and no earlier answer, a DN that is not a root may still be an intermediate the
client has not seen: the request is sent and the answer checked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from cmc.errors import IssuerMismatch

log = logging.getLogger("cmcgate.cmc.issuer")
MAX_DEPTH = 8


def _fold(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return " ".join(text.split()).casefold()


def names_match(a: x509.Name, b: x509.Name) -> bool:
    """Same attribute types in the same RDN order, values equal ignoring case and blanks."""
    if len(a.rdns) != len(b.rdns):
        return False
    for left, right in zip(a.rdns, b.rdns, strict=True):
        mine = sorted((attr.oid.dotted_string, _fold(attr.value)) for attr in left)
        theirs = sorted((attr.oid.dotted_string, _fold(attr.value)) for attr in right)
        if mine != theirs:
            return False
    return True


def _self_issued(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def continue_upwards(
    chain: Sequence[x509.Certificate], others: Iterable[x509.Certificate]
) -> list[x509.Certificate]:
    """``chain`` (issuer first), continued through ``others`` up to a self-signed one."""
    path = list(chain)
    pool = list(others)
    while path and not _self_issued(path[-1]) and len(path) < MAX_DEPTH:
        top = path[-1]
        parent = next(
            (c for c in pool if c.subject == top.issuer and c not in path and _signed_by(top, c)),
            None,
        )
        if parent is None:
            break
        path.append(parent)
    return path


def _describe(chain: Sequence[x509.Certificate]) -> str:
    return " -> ".join(f'"{c.subject.rfc4514_string()}"' for c in chain) or "nothing"


def check_issuer(
    issued: x509.Certificate,
    chain: Sequence[x509.Certificate],
    issuer_dn: x509.Name | None,
    others: Iterable[x509.Certificate] = (),
) -> None:
    """IssuerMismatch unless ``issuer_dn`` names a CA on ``issued``'s chain (issuer first)."""
    if issuer_dn is None:
        return
    path = continue_upwards(chain, others)
    names = [issued.issuer, *(c.subject for c in path)]
    if not any(names_match(name, issuer_dn) for name in names):
        raise IssuerMismatch(
            f"certificate {issued.serial_number:x} was issued under {_describe(path)}; "
            f"issuerDN {issuer_dn.rfc4514_string()} names none of them"
        )


class IssuerChains:
    """What the client knows about where its CA issues; see the module docstring.

    ``anchors``: the trusted certificates the client is configured with.  Those that are not
    self-signed (an issuing CA imported as trusted) make the chain known in advance.
    Thread-safe: one instance may serve every CMC client of a gateway.
    """

    def __init__(self, anchors: Sequence[x509.Certificate] = ()) -> None:
        self.anchors = tuple(anchors)
        self.configured = tuple(
            tuple(continue_upwards([c], self.anchors)) for c in self.anchors if not _self_issued(c)
        )
        self._learned: list[tuple[x509.Certificate, ...]] = []
        self._lock = threading.Lock()

    def learn(self, chain: Sequence[x509.Certificate]) -> None:
        """Remember the chain (issuer first) of a certificate the CA has just issued."""
        path = tuple(continue_upwards(chain, self.anchors))
        if not path:
            return
        with self._lock:
            if path not in self._learned:
                self._learned.append(path)

    @property
    def learned(self) -> tuple[tuple[x509.Certificate, ...], ...]:
        with self._lock:
            return tuple(self._learned)

    def known(self) -> list[tuple[x509.Certificate, ...]]:
        """The issuing chains known in advance (configured, then learned)."""
        return [*self.configured, *self.learned]

    def check_before_sending(self, issuer_dn: x509.Name | None) -> None:
        """IssuerMismatch when the chain is known and ``issuer_dn`` names no CA on it."""
        chains = self.known()
        if issuer_dn is None or not chains:
            return
        candidates = [*self.anchors, *(c for chain in chains for c in chain)]
        if any(names_match(c.subject, issuer_dn) for c in candidates):
            return
        seen = "; ".join(_describe(chain) for chain in chains)
        raise IssuerMismatch(
            f"refused before sending: issuerDN {issuer_dn.rfc4514_string()} names no CA this "
            f"PKI issues under ({seen}); correct security.pkiConnection.rfc2797.issuerDN, or "
            "add the issuing CA's certificate to cmcgate.pki.trustedRoots"
        )


def revoke_unkept(
    revoke: Callable[..., object], cert: x509.Certificate, why: IssuerMismatch
) -> None:
    """Revoke (``CmcClient.revoke``) a certificate issued although it cannot be kept: nobody
    would hold its key.  Best effort: a failure is logged, the mismatch is what counts."""
    try:
        revoke(cert.issuer, cert.serial_number, "cessationOfOperation", comment=str(why)[:200])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.error("certificate %x cannot be kept (%s) and could not be revoked: %s",
                  cert.serial_number, why, exc)  # fmt: skip
    else:
        log.warning("certificate %x revoked at the CA: %s", cert.serial_number, why)
