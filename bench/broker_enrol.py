"""First-send latency of auto-enrolment (not a test): ``python bench/broker_enrol.py [users]``.

Starts the bundled CA (software keys) behind its real HTTPS CMC endpoint on loopback and
asks the gateway's certificate view (``EnrollingCertificates`` over the store) for the signing
identity of ``users`` new internal senders, one after the other, as the pipeline does for a
first mail: key pair, PKCS#10, Full PKI Request signed by the access certificate, HTTPS with
client certificate, response validation, store.  Once with keys generated on demand, once with
a pre-filled key pool (``cmcgate.enrolment.keyPoolSize``), both with the default key type
(RSA-3072).  The baseline is the same lookup for a user who has a certificate already; the
*added* latency is a first send's minus the baseline's median.  Target: p50 <= 100 ms with
the pool.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ca.keys.software import SoftwareBackend  # noqa: E402
from cmc.client_config import client_from_config  # noqa: E402
from config.model import EnrolmentSettings, PkiConnection  # noqa: E402
from gateway.broker.enrolling import EnrollingCertificates
from gateway.broker.enrolment import Enroller  # noqa: E402
from gateway.certs.adapter import StoreCertificates  # noqa: E402
from gateway.certs.keystore import KeyStore  # noqa: E402
from gateway.certs.store import CertStore  # noqa: E402
from tests.gateway.test_enrolment import start_bundled_ca  # noqa: E402

KEY_TYPE = "rsa3072"
WARM_UP = 2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def first_sends(
    certs: EnrollingCertificates, prefix: str, users: int, known: str
) -> tuple[list[float], list[float]]:
    for n in range(WARM_UP):  # TLS session, PKCS#12 load, worker threads
        await certs.signing_identity(f"warm-{prefix}-{n}@example.org")
    first, baseline = [], []
    for n in range(users):
        start = time.perf_counter()
        identity = await certs.signing_identity(f"{prefix}-{n}@example.org")
        first.append(time.perf_counter() - start)
        assert identity is not None
        start = time.perf_counter()
        assert await certs.signing_identity(known) is not None
        baseline.append(time.perf_counter() - start)
    return first, baseline


def run(tmp: Path, pki: PkiConnection, users: int, pool: bool) -> dict[str, float]:
    mode = "pool" if pool else "nopool"
    store = CertStore.open(f"sqlite:///{tmp / f'{mode}.db'}")
    keys = KeyStore(SoftwareBackend(tmp / f"{mode}-keys", passphrase="bench-secret"))
    settings = EnrolmentSettings(key_pool_size=users + WARM_UP + 1 if pool else 0,
                                 key_type=KEY_TYPE)  # fmt: skip
    enroller = Enroller(store, keys, lambda: client_from_config(pki), pki, settings,
                        state_dir=tmp / mode).start()  # fmt: skip
    try:
        if enroller.pool is not None:
            fill = time.perf_counter()
            enroller.pool.wait_full(timeout=600)
            print(f"  pool of {enroller.pool.size} {KEY_TYPE} keys filled in"
                  f" {time.perf_counter() - fill:.1f} s")  # fmt: skip
        certs = EnrollingCertificates(StoreCertificates(store, keys), enroller)
        known = f"known-{mode}@example.org"
        asyncio.run(certs.signing_identity(known))
        first, baseline = asyncio.run(first_sends(certs, mode, users, known))
        base = statistics.median(baseline)
        added = [f - base for f in first]
        misses = enroller.pool.misses if enroller.pool is not None else users
        return {
            "p50": percentile(added, 50) * 1000,
            "p99": percentile(added, 99) * 1000,
            "base": base * 1000,
            "misses": misses,
        }
    finally:
        enroller.close()
        keys.close()


def main(users: int = 20) -> None:
    with tempfile.TemporaryDirectory(prefix="cmcgate-bench-") as name:
        tmp = Path(name)
        ca, pki, _ = start_bundled_ca(tmp)
        try:
            print(f"first-send added latency, {users} new users each, {KEY_TYPE}, CMC over HTTPS"
                  " on loopback to the bundled CA (software keys)")  # fmt: skip
            results = {}
            for pool in (False, True):
                label = "with key pool" if pool else "keys on demand"
                print(f"{label}:")
                results[pool] = r = run(tmp, pki, users, pool)
                print(f"  added latency p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms"
                      f"  (baseline lookup {r['base']:.1f} ms,"
                      f" pool misses {r['misses']:.0f})")  # fmt: skip
        finally:
            ca.stop()
    on_demand, pooled = results[False], results[True]
    print(f"ratio on-demand/pool: p50 {on_demand['p50'] / pooled['p50']:.1f}x,"
          f" p99 {on_demand['p99'] / pooled['p99']:.1f}x")  # fmt: skip
    verdict = "met" if pooled["p50"] <= 100 else "MISSED"
    print(f"target p50 <= 100 ms with the pool: {verdict} ({pooled['p50']:.1f} ms)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
