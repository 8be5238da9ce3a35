"""A Full PKI Request seen before (the same transactionId and senderNonce): how to answer it.

Clients resend a request unchanged when its answer did not reach them: the connection broke
after the CA had issued, the answer came after the client's read timeout, the client died
mid-exchange (the gateway keeps the request it sent for exactly this, see
:mod:`gateway.broker.enrolment`).  Refusing the resend as a replay left a valid certificate the
client never got, and the client's next attempt ordered a second one.  So the CA answers a
replay the way RFC 5272 treats a transaction (§6.6: the transactionId names it, the client
may ask about it again) — as long as answering changes nothing:

* every certification request (tcr) in it must be one the original carried: an order of the
  same account with the same transactionId, senderNonce and CSR.  It is answered from that
  order (the latest, when there are several), as a queryPending would be: issued ->
  ``success`` with the certificate issued then (no second one), waiting for approval or
  still being processed -> ``pending`` with its pendToken, revoked -> ``failed``.  A
  *failed* order issued nothing, so that tcr is ordered again: the original may have failed
  because the CA was unavailable (its ``tryLater`` answer lost, or unsigned for the same
  reason); a refusal on the merits is simply repeated;
* queryPending and getCert only read, and are answered as in a fresh request;
* a revokeRequest is not carried out twice, and a tcr the original did not carry (a different
  body under the same transactionId and senderNonce, or a replay of a message that was refused
  before it made an order) is refused: ``badRequest``, as every replay was before.

How long: :data:`REPLAY_WINDOW`, 7 days from the first time the CA saw the message.  A mail
gateway retries a deferred message for 5 days by default (Postfix ``maximal_queue_lifetime``,
Sendmail ``Timeout.queuereturn``), so its last retry still finds its certificate; a replay
older than that is refused as before.  The (transactionId, senderNonce) records themselves
are kept (:meth:`ca.store.orders.Store.forget_nonces_before` prunes them), so an old replay is
still recognised as one.

An original still being processed when its replay arrives (the answer was slow, not lost):
the replay waits for it (:class:`TransactionLocks`, one lock per transactionId in flight in
this CA process) and then reads the finished order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import CertificateAuthority
from ca.service.operations import Refusal, Subject
from ca.store.model import OrderView
from cmc.messages.api import CertificationRequest, CMCFailInfo, FullPKIRequest

log = logging.getLogger(__name__)

#: How long after its first arrival a replayed request is answered (see the module doc).
REPLAY_WINDOW = timedelta(days=7)


class TransactionLocks:
    """One lock per transactionId while a request of that transaction is being answered."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[int, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, transaction_id: int) -> Iterator[None]:
        with self._guard:
            lock, users = self._held.get(transaction_id, (threading.Lock(), 0))
            self._held[transaction_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._held[transaction_id]
                if users == 1:
                    del self._held[transaction_id]
                else:
                    self._held[transaction_id] = (lock, users - 1)


def replayed_orders(
    ca: CertificateAuthority,
    request: FullPKIRequest,
    subject: Subject,
    *,
    first_seen: datetime,
    now: datetime,
    window: timedelta = REPLAY_WINDOW,
) -> dict[bytes, OrderView]:
    """The orders the original of this replay made, by CSR (DER); :class:`Refusal` when the
    replay must not be answered (see the module doc)."""
    txid, nonce = request.transaction_id, request.sender_nonce
    seen = f"replayed request: transactionId {txid} with this senderNonce was seen before"
    if now - first_seen > window:
        raise Refusal(
            CMCFailInfo.BAD_REQUEST,
            f"{seen}, more than {window / timedelta(days=1):g} days ago: start a new transaction",
        )
    if request.pki_data.find("revokeRequest"):
        raise Refusal(CMCFailInfo.BAD_REQUEST, f"{seen}; a revocation is not repeated")
    orders = {  # oldest first: the latest order for a CSR wins
        order.csr_der: order
        for order in ca.store.find_orders(account=subject.account, transaction_id=txid)
        if order.sender_nonce == nonce and order.csr_der is not None
    }
    requested = [
        item.csr.public_bytes(Encoding.DER)
        for item in request.pki_data.requests
        if isinstance(item, CertificationRequest)
    ]
    if any(csr not in orders for csr in requested):
        raise Refusal(
            CMCFailInfo.BAD_REQUEST,
            f"{seen}, with a certification request the original did not carry",
        )
    answered = [orders[csr].id for csr in requested]
    log.info("replayed transaction %s of %s answered from %s", txid, subject.account,
             ", ".join(answered) or "its queries")  # fmt: skip
    return {csr: orders[csr] for csr in requested}


__all__ = ["REPLAY_WINDOW", "TransactionLocks", "replayed_orders"]
