"""The orders this process is working on right now (process-wide, across reloads).

The lost-order clean-up (:mod:`ca.ra.cleanup`) takes an order that made no progress for 15
minutes for lost. An issuance that is alive but slow (an HSM queueing its sessions, a token
waiting for its login, a network HSM failing over) must not be taken for lost: the thread
would go on signing an order the clean-up has failed, and the client would get an error for
a certificate that exists. :meth:`ca.authority.CertificateAuthority._issue` registers its
order here for as long as it works on it; the clean-up leaves registered orders alone.

Process-wide rather than per authority: after a SIGHUP the scheduler uses the new authority
while a request may still be issuing with the retired one. Orders of another process sharing
the database are not known here; that process's own clean-up sees them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_working: Counter[str] = Counter()


@contextmanager
def working_on(order_id: str) -> Iterator[None]:
    """Mark ``order_id`` as being worked on by this process while the block runs."""
    with _lock:
        _working[order_id] += 1
    try:
        yield
    finally:
        with _lock:
            _working[order_id] -= 1
            if _working[order_id] <= 0:
                del _working[order_id]


def in_flight(order_id: str) -> bool:
    """A thread of this process is working on the order now."""
    with _lock:
        return order_id in _working
