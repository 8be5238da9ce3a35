"""A key for a new enrolment, made only once the enrolment is recorded.

The enroller writes which key an enrolment certifies into the address's state file
(:mod:`gateway.broker.state`) so that every retry reuses that key.  Making the key first
and recording it second left the key behind whenever the record could not be written (a full
or read-only state directory): one unused key on the HSM for every message from a new
sender, or, with a key pool, a pool key claimed and never used.  So the record comes first:

* a pool key (:class:`~gateway.broker.keypool.KeyPool`) is taken, recorded, and given back to the
  pool when the record cannot be written;
* otherwise the label the key will get (``user:<email>:<n>``) is recorded, and only then is
  the key generated under it (:meth:`~gateway.certs.keystore.KeyStore.generate_for`).  A retry
  after a failed generation finds the recorded label without a key and generates again.

Either way the message gets a ``TemporaryFailure`` (451) and nothing is left behind.
"""

from __future__ import annotations

from dataclasses import replace

from ca.keys import PrivateKeyHandle
from cmc.errors import TemporaryFailure
from gateway.broker.keypool import KeyPool, KeyPoolError
from gateway.broker.state import EnrolmentState, StateFiles
from gateway.certs.keystore import KeyStore


def recorded_new_key(
    files: StateFiles,
    keys: KeyStore,
    pool: KeyPool | None,
    key_type: str,
    started: EnrolmentState,
) -> tuple[EnrolmentState, PrivateKeyHandle]:
    """``started`` with a new key's label, saved, and that key (see the module doc)."""
    made: list[EnrolmentState] = []

    def record(label: str) -> None:
        made.append(replace(started, key_label=label))
        files.save(made[-1])

    if pool is not None:
        try:
            taken = pool.take(started.email)
        except KeyPoolError as exc:
            raise TemporaryFailure(f"enrolment of {started.email}: {exc}") from exc
        if taken is not None:
            try:
                record(taken.label)
            except TemporaryFailure:
                files.remove(started.email)  # a save can fail after its rename (dir fsync)
                pool.give_back(taken.label)
                raise
            return made[-1], taken
    key = keys.generate_for(started.email, key_type, before=record)
    return made[-1], key
