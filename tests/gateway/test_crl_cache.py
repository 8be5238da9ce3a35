"""CrlChecker's caching: one fetch per nextUpdate (also for concurrent checks), a file cache a
second checker (a restarted gateway, another worker) uses, a refresh behind the answer.
CRLs from a real HTTP server on loopback (tests.gateway.test_lookup.CrlServer)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.certs.models import RevocationStatus
from gateway.certs.revocation import CrlChecker
from tests.gateway.test_lookup import ROOT, STRANGER, Clock, CrlServer, mint

GOOD, REVOKED = RevocationStatus.GOOD, RevocationStatus.REVOKED


def test_concurrent_checks_of_one_crl_fetch_it_once() -> None:
    server = CrlServer()
    checker = CrlChecker()
    try:
        server.publish(ROOT)
        certs = [mint(f"c{i}@partner.example", crl_url=server.url())[1] for i in range(4)]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda c: checker.status(c, ROOT.cert), certs * 5))
        assert statuses == [GOOD] * 20
        assert checker.fetches == 1
    finally:
        checker.close()
        server.close()


def test_a_second_checker_uses_the_file_a_first_one_kept_until_next_update(
    tmp_path: Path,
) -> None:
    server = CrlServer()
    clock = Clock()
    try:
        _, cert = mint("olga@partner.example", crl_url=server.url())
        server.publish(ROOT, cert.serial_number)
        first = CrlChecker(cache_dir=tmp_path, clock=clock)
        assert first.status(cert, ROOT.cert) is REVOKED
        first.close()
        server.publish(ROOT)  # the server's newer CRL is not asked for while the file is current
        second = CrlChecker(cache_dir=tmp_path, clock=clock)
        assert second.status(cert, ROOT.cert) is REVOKED
        assert (first.fetches, second.fetches) == (1, 0)
        second.close()
        clock.advance(dt.timedelta(days=8))  # past the file's nextUpdate: fetched again
        third = CrlChecker(cache_dir=tmp_path, clock=clock)
        third.status(cert, ROOT.cert)
        assert third.fetches == 1
        third.close()
    finally:
        server.close()


def test_a_cached_file_not_signed_by_the_issuer_is_ignored(tmp_path: Path) -> None:
    server = CrlServer()
    try:
        _, cert = mint("pete@partner.example", crl_url=server.url())
        server.publish(STRANGER, cert.serial_number)
        forged = server.crls["/root.crl"]
        server.publish(ROOT)
        checker = CrlChecker(cache_dir=tmp_path)
        checker.status(cert, ROOT.cert)  # makes the file
        [kept] = list(tmp_path.glob("*.crl"))
        kept.write_bytes(forged)  # somebody else's "revocation" in the cache directory
        again = CrlChecker(cache_dir=tmp_path)
        assert again.status(cert, ROOT.cert) is GOOD
        assert again.fetches == 1
        assert kept.read_bytes() == server.crls["/root.crl"]  # replaced by the real one
        checker.close()
        again.close()
    finally:
        server.close()


def test_near_its_next_update_a_crl_is_refreshed_behind_the_cached_answer() -> None:
    server = CrlServer()
    clock = Clock()
    checker = CrlChecker(clock=clock, max_age=dt.timedelta(hours=1))
    try:
        _, cert = mint("quinn@partner.example", crl_url=server.url())
        server.publish(ROOT)
        assert checker.status(cert, ROOT.cert) is GOOD
        server.publish(ROOT, cert.serial_number)
        clock.advance(dt.timedelta(minutes=55))  # within refresh_ahead (10 min) of its expiry
        assert checker.status(cert, ROOT.cert) is GOOD  # answered from the cache at once...
        checker.wait_for_refreshes()  # ...while the newer CRL was fetched behind it
        assert checker.fetches == 2
        assert checker.status(cert, ROOT.cert) is REVOKED
        assert checker.fetches == 2
    finally:
        checker.close()
        server.close()
