"""Benchmark recipient lookup: memory (hot) vs LDAP on loopback (cold) vs negative-cached.

    .venv/bin/python bench/broker_lookup.py              # 300 recipients
    .venv/bin/python bench/broker_lookup.py --recipients 1000 --json

A private slapd on loopback holds one entry per recipient with an RSA-2048 S/MIME certificate
whose CRL distribution point is a CRL served over HTTP on loopback (fetched once, then cached
— the first cold lookup pays it and is left out). The store is SQLite (WAL) in a temp dir.

* cold: first lookup of each recipient — store miss, LDAP search, chain + CRL check (median;
  the store add with ``source=ldap`` runs behind the answer and is timed as store_write);
* hot: the same recipients again, answered from memory;
* store: memory dropped, answered by the store (what a restart costs per recipient);
* store_write: the wait for the write behind a cold lookup (add + revocation status);
* cold-miss: an address in no directory — store miss, LDAP search (median; the negative
  entry is written behind the answer);
* negative: that address again, answered from memory.

Targets: hot <= 50 µs, cold <= 5 ms per lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOT_TARGET_US = 50.0
COLD_TARGET_US = 5000.0


async def measure(recipients: int, hot_rounds: int) -> dict[str, float]:
    from cryptography.hazmat.primitives import serialization

    from config.model import LdapDirectory
    from gateway.certs.lookup import RecipientLookup
    from gateway.certs.store import CertStore
    from gateway.devservices import Slapd
    from tests.gateway.test_lookup import ROOT as CA
    from tests.gateway.test_lookup import CrlServer, mint

    emails = [f"r{i:05d}@partner.example" for i in range(recipients + 1)]
    crl = CrlServer()
    crl.publish(CA)
    with tempfile.TemporaryDirectory(prefix="cmcgate-bench-") as tmp, Slapd() as slapd:
        with slapd.connection() as conn:
            conn.add(f"ou=people,{slapd.suffix}", ["organizationalUnit"], {"ou": "people"})
            for email in emails:
                _, cert = mint(email, crl_url=crl.url(), key_label="bench")
                der = cert.public_bytes(serialization.Encoding.DER)
                conn.add(
                    f"mail={email},ou=people,{slapd.suffix}",
                    ["inetOrgPerson"],
                    {"cn": email, "sn": "r", "mail": email, "userCertificate;binary": der},
                )
        store = CertStore.open(f"sqlite:///{Path(tmp) / 'gateway.db'}")
        directory = LdapDirectory("bench", slapd.url, slapd.suffix, timeout=5.0)
        lookup = RecipientLookup(
            store, [directory], trust_anchors=[CA.cert], negative_ttl=timedelta(hours=1)
        )
        try:
            assert await lookup.find(emails[-1]) is not None  # warm-up: connection, CRL
            targets = emails[:-1]

            cold_each = []
            for email in targets:  # the store write happens behind the answer: not timed
                start = time.perf_counter()
                assert await lookup.find(email) is not None
                cold_each.append(time.perf_counter() - start)
                lookup.flush()
            cold = statistics.median(cold_each)
            assert lookup.searches == len(emails)

            start = time.perf_counter()
            for _ in range(hot_rounds):
                for email in targets:
                    await lookup.find(email)
            hot = (time.perf_counter() - start) / (hot_rounds * len(targets))

            lookup.forget(*targets)
            start = time.perf_counter()
            for email in targets:
                assert await lookup.find(email) is not None
            from_store = (time.perf_counter() - start) / len(targets)

            missing = [f"nobody{i:05d}@partner.example" for i in range(len(targets))]
            miss_each = []
            for email in missing:
                start = time.perf_counter()
                assert await lookup.find(email) is None
                miss_each.append(time.perf_counter() - start)
                lookup.flush()
            cold_miss = statistics.median(miss_each)

            lookup.forget(*targets)
            store_writes = 0.0
            for email in targets[: len(targets) // 2]:  # cost of the write behind the answer
                record = store.best_for_encryption(email)
                assert record is not None
                store.remove(record.fingerprint)
                lookup.forget(email)
                await lookup.find(email)
                start = time.perf_counter()
                lookup.flush()
                store_writes += time.perf_counter() - start
            store_write = store_writes / (len(targets) // 2)

            searches = lookup.searches
            start = time.perf_counter()
            for _ in range(hot_rounds):
                for email in missing:
                    await lookup.find(email)
            negative = (time.perf_counter() - start) / (hot_rounds * len(missing))
            assert lookup.searches == searches, "a negative-cached lookup asked LDAP"
        finally:
            lookup.close()
            store.close()
            crl.close()
    us = 1e6
    return {
        "recipients": recipients,
        "hot_us": hot * us,
        "cold_us": cold * us,
        "store_us": from_store * us,
        "cold_miss_us": cold_miss * us,
        "store_write_us": store_write * us,
        "negative_us": negative * us,
        "cold_over_hot": cold / hot,
        "cold_miss_over_negative": cold_miss / negative,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=300)
    parser.add_argument("--hot-rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(measure(args.recipients, args.hot_rounds))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"recipient lookup, {result['recipients']} recipients (µs per lookup)")
        for name in ("hot", "negative", "store", "cold", "cold_miss", "store_write"):
            print(f"  {name:10s} {result[name + '_us']:10.1f}")
        print(f"  cold/hot {result['cold_over_hot']:.0f}x,"
              f" cold-miss/negative {result['cold_miss_over_negative']:.0f}x")  # fmt: skip
    ok = result["hot_us"] <= HOT_TARGET_US and result["cold_us"] <= COLD_TARGET_US
    verdict = "meets" if ok else "MISSES"
    print(f"{verdict} targets: hot <= {HOT_TARGET_US:.0f} µs, cold <= {COLD_TARGET_US:.0f} µs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
