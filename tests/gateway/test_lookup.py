"""Recipient lookup: memory, the store, a real slapd, CRLs from a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cmc.errors import TemporaryFailure
from config.model import LdapDirectory
from gateway.certs.ldap import DirectoryUnavailable
from gateway.certs.lookup import LookupCertificates, RecipientLookup
from gateway.certs.models import RevocationStatus, Source
from gateway.certs.revocation import CrlChecker
from gateway.certs.store import CertStore
from gateway.devservices import Slapd, free_port
from gateway.pipeline import PipelineSettings, SmimePipeline
from gateway.policy import EncryptMode, Policy, SignMode
from gateway.smime import decrypt
from gateway.smtp.message import Transaction
from tests.gateway.certs import CA, NOW, make_ca, new_key
from tests.gateway.test_end_to_end_smime import PLAIN, MemoryCertificates

ROOT = make_ca("Lookup Test Root")
STRANGER = make_ca("Stranger Root")
TTL = dt.timedelta(hours=1)


# -- helpers: certificates, a CRL server, a clock ----------------------------------------------
def mint(
    email: str,
    *,
    ca: CA = ROOT,
    crl_url: str | None = None,
    san: str | None = None,
    kind: str = "rsa",
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.EMAIL_PROTECTION,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    key_label: str | None = None,
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An S/MIME certificate for ``email`` (RSA key transport unless ``kind="ec"``)."""
    key = new_key(kind, key_label or f"lookup|{email}|{kind}")
    is_rsa = kind == "rsa"
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, is_rsa, False, not is_rsa, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(san or email)]), critical=False)
    )
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return key, builder.sign(ca.key, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def publish(slapd: Slapd, email: str, *certs: x509.Certificate) -> None:
    with slapd.connection() as conn:
        conn.add(f"ou=people,{slapd.suffix}", ["organizationalUnit"], {"ou": "people"})
        attributes: dict[str, object] = {"cn": email, "sn": email.split("@")[0], "mail": email}
        if certs:
            attributes["userCertificate;binary"] = [der(c) for c in certs]
        assert conn.add(f"mail={email},ou=people,{slapd.suffix}", ["inetOrgPerson"], attributes)


class CrlServer:
    """Serves CRLs (DER) by path from a real HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        crls: dict[str, bytes] = {}
        self.crls = crls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = crls.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/root.crl") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def publish(self, ca: CA, *revoked: int, path: str = "/root.crl") -> None:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(NOW - dt.timedelta(hours=1))
            .next_update(NOW + dt.timedelta(days=7))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(NOW - dt.timedelta(minutes=30))
                .build()
            )
        self.crls[path] = der_crl(builder.sign(ca.key, hashes.SHA256()))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def der_crl(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def crl_server() -> Iterator[CrlServer]:
    server = CrlServer()
    server.publish(ROOT)
    yield server
    server.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CertStore]:
    s = CertStore.open(f"sqlite:///{tmp_path / 'gateway.db'}")
    yield s
    s.close()


def directory(server: Slapd, name: str = "partners") -> LdapDirectory:
    return LdapDirectory(name=name, url=server.url, base=server.suffix, timeout=2.0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def lookup(store: CertStore, slapd: Slapd, clock: Clock) -> Iterator[RecipientLookup]:
    found = RecipientLookup(
        store, [directory(slapd)], trust_anchors=[ROOT.cert], negative_ttl=TTL, clock=clock
    )
    yield found
    found.close()


# -- found, stored, cached -----------------------------------------------------------------------
async def test_a_recipient_published_in_ldap_is_validated_stored_and_then_served_from_memory(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, crl_server: CrlServer
) -> None:
    _, cert = mint("bob@partner.example", crl_url=crl_server.url())
    publish(slapd, "bob@partner.example", cert)

    assert await lookup.find("Bob@Partner.example") == cert
    lookup.flush()
    [record] = store.find(email="bob@partner.example")
    assert record.source is Source.LDAP
    assert record.revocation is RevocationStatus.GOOD  # the CRL was fetched and checked
    assert lookup.searches == 1

    slapd.pause()
    assert await lookup.find("bob@partner.example") == cert
    assert lookup.searches == 1


async def test_a_recipient_already_in_the_store_is_not_looked_up(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd
) -> None:
    _, cert = mint("imported@partner.example")
    store.add(cert, Source.IMPORTED)
    slapd.pause()
    assert await lookup.find("imported@partner.example") == cert
    assert lookup.searches == 0


async def test_a_recipient_in_no_directory_is_remembered_as_missing_until_the_ttl_runs_out(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, clock: Clock
) -> None:
    publish(slapd, "nocert@partner.example")  # an entry, but without a certificate
    assert await lookup.find("nocert@partner.example") is None
    assert await lookup.find("nobody@partner.example") is None
    lookup.flush()
    assert store.is_known_missing("nobody@partner.example", at=clock())
    assert lookup.searches == 2

    slapd.pause()
    clock.advance(TTL - dt.timedelta(seconds=1))
    assert await lookup.find("nobody@partner.example") is None  # no error: LDAP not asked
    assert lookup.searches == 2

    clock.advance(dt.timedelta(seconds=2))
    with pytest.raises(TemporaryFailure):
        await lookup.find("nobody@partner.example")


async def test_a_directory_that_is_down_at_the_first_lookup_is_a_temporary_failure(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, clock: Clock
) -> None:
    slapd.pause()
    with pytest.raises(DirectoryUnavailable, match="partners"):
        await lookup.find("bob@partner.example")
    assert not store.is_known_missing("bob@partner.example", at=clock())

    slapd.start()
    _, cert = mint("bob@partner.example")
    publish(slapd, "bob@partner.example", cert)
    assert await lookup.find("bob@partner.example") == cert


async def test_pooled_connections_survive_a_directory_restart(
    lookup: RecipientLookup, slapd: Slapd
) -> None:
    for email in ("one@partner.example", "two@partner.example"):
        publish(slapd, email, mint(email)[1])
    assert await lookup.find("one@partner.example") is not None
    slapd.pause()
    slapd.start()
    assert await lookup.find("two@partner.example") is not None


async def test_a_certificate_imported_meanwhile_ends_a_cached_miss_within_the_recheck(
    lookup: RecipientLookup, store: CertStore, clock: Clock
) -> None:
    assert await lookup.find("lea@partner.example") is None
    lookup.flush()
    _, cert = mint("lea@partner.example")
    store.add(cert, Source.IMPORTED)  # e.g. `cmcgate certs import` in another process
    assert await lookup.find("lea@partner.example") is None  # memory still says missing
    clock.advance(lookup.recheck + dt.timedelta(seconds=1))
    assert await lookup.find("lea@partner.example") == cert
    assert lookup.searches == 1


async def test_a_stored_certificate_about_to_expire_is_replaced_by_its_renewal_from_ldap(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, clock: Clock
) -> None:
    email = "max@partner.example"
    _, old = mint(email, not_after=clock() + lookup.expiry_margin / 2)
    store.add(old, Source.LDAP)
    slapd.pause()
    assert await lookup.find(email) == old  # directory down: the stored one still serves
    slapd.start()
    assert await lookup.find(email) == old  # from memory until the next recheck
    clock.advance(lookup.recheck + dt.timedelta(seconds=1))
    _, renewal = mint(email, not_before=NOW - dt.timedelta(minutes=1))
    publish(slapd, email, old, renewal)
    assert await lookup.find(email) == renewal
    lookup.flush()
    best = store.best_for_encryption(email, at=clock())
    assert best is not None and best.serial == f"{renewal.serial_number:x}"


async def test_a_certificate_the_store_knows_as_revoked_is_not_taken_from_ldap_again(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd
) -> None:
    _, cert = mint("ned@partner.example")  # no CRL distribution point: status unknown
    publish(slapd, "ned@partner.example", cert)
    store.mark_revoked(store.add(cert, Source.LDAP).fingerprint)
    assert await lookup.find("ned@partner.example") is None
    assert lookup.searches == 1


# -- what is not used ----------------------------------------------------------------------------
BAD = {
    "not-chaining": dict(ca=STRANGER),
    "wrong-address": dict(san="someone.else@partner.example"),
    "expired": dict(not_before=NOW - dt.timedelta(days=400), not_after=NOW - dt.timedelta(days=1)),
    "no-email-protection": dict(eku=ExtendedKeyUsageOID.CLIENT_AUTH),
    "ed25519-key": dict(kind="ed25519"),  # nobody encrypts to Ed25519 (EC keys: ECDH)
    "revoked": dict(serial=0x5EC1A1),
}
REASONS = {
    "not-chaining": "untrusted",
    "wrong-address": "rfc822Name",
    "expired": "untrusted",
    "no-email-protection": "not usable for encryption",
    "ed25519-key": "not usable for encryption",
    "revoked": "revoked",
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_certificate_that_does_not_qualify_is_never_used(
    case: str,
    lookup: RecipientLookup,
    store: CertStore,
    slapd: Slapd,
    crl_server: CrlServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    crl_server.publish(ROOT, 0x5EC1A1)
    _, cert = mint("eve@partner.example", crl_url=crl_server.url(), **BAD[case])  # type: ignore[arg-type]
    publish(slapd, "eve@partner.example", cert)
    with caplog.at_level(logging.INFO, logger="cmcgate.gateway.lookup"):
        assert await lookup.find("eve@partner.example") is None
    assert REASONS[case] in caplog.text
    lookup.flush()
    assert store.best_for_encryption("eve@partner.example") is None
    assert store.is_known_missing("eve@partner.example")


async def test_an_ec_certificate_in_the_directory_is_used_for_ecdh(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, crl_server: CrlServer
) -> None:
    crl_server.publish(ROOT, 0xBAD)
    _, cert = mint("gil@partner.example", kind="ec", crl_url=crl_server.url())
    publish(slapd, "gil@partner.example", cert)
    assert await lookup.find("gil@partner.example") == cert
    lookup.flush()
    record = store.best_for_encryption("gil@partner.example")
    assert record is not None and record.key_algorithm == "ec"


async def test_the_newest_usable_certificate_wins_over_older_and_unusable_ones(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd, crl_server: CrlServer
) -> None:
    crl_server.publish(ROOT, 0xBAD)
    url = crl_server.url()
    email = "carol@partner.example"
    _, old = mint(email, crl_url=url, not_before=NOW - dt.timedelta(days=30))
    _, new = mint(email, crl_url=url, not_before=NOW - dt.timedelta(days=2))
    _, revoked = mint(email, crl_url=url, serial=0xBAD, not_before=NOW - dt.timedelta(hours=2))
    _, unusable_newest = mint(email, kind="ed25519", not_before=NOW - dt.timedelta(hours=1))
    _, stranger = mint(email, ca=STRANGER, not_before=NOW - dt.timedelta(minutes=5))
    publish(slapd, email, old, stranger, revoked, new, unusable_newest)

    assert await lookup.find(email) == new
    lookup.flush()
    assert [r.serial for r in store.find(email=email)] == [f"{new.serial_number:x}"]


async def test_an_unreachable_crl_leaves_the_status_unknown_and_the_certificate_is_used(
    lookup: RecipientLookup, store: CertStore, slapd: Slapd
) -> None:
    _, cert = mint("dan@partner.example", crl_url=f"http://127.0.0.1:{free_port()}/gone.crl")
    publish(slapd, "dan@partner.example", cert)
    assert await lookup.find("dan@partner.example") == cert
    lookup.flush()
    [record] = store.find(email="dan@partner.example")
    assert record.revocation is RevocationStatus.UNKNOWN


def test_a_crl_not_signed_by_the_issuer_is_not_believed() -> None:
    server = CrlServer()
    try:
        _, cert = mint("fay@partner.example", crl_url=server.url())
        server.publish(STRANGER, cert.serial_number)  # another CA claims it is revoked
        checker = CrlChecker()
        assert checker.status(cert, ROOT.cert) is RevocationStatus.UNKNOWN
        server.publish(ROOT, cert.serial_number)
        assert checker.status(cert, ROOT.cert) is RevocationStatus.UNKNOWN  # failure cached
        checker.clear()
        assert checker.status(cert, ROOT.cert) is RevocationStatus.REVOKED
        assert checker.fetches == 2
    finally:
        server.close()


async def test_filter_metacharacters_in_an_address_match_nothing_but_themselves(
    lookup: RecipientLookup, slapd: Slapd
) -> None:
    publish(slapd, "bob@partner.example", mint("bob@partner.example")[1])
    assert await lookup.find("*@partner.example") is None
    assert await lookup.find("b*)(mail=*@partner.example") is None


# -- several directories, concurrency -----------------------------------------------------------
async def test_a_directory_that_is_down_does_not_keep_another_from_answering(
    store: CertStore, slapd: Slapd
) -> None:
    down = LdapDirectory(name="down", url=f"ldap://127.0.0.1:{free_port()}", base="o=x")
    _, cert = mint("gus@partner.example")
    publish(slapd, "gus@partner.example", cert)
    found = RecipientLookup(
        store, [down, directory(slapd)], trust_anchors=[ROOT.cert], negative_ttl=TTL
    )
    try:
        assert await found.find("gus@partner.example") == cert
        with pytest.raises(DirectoryUnavailable, match="down"):  # not found, one was down
            await found.find("hal@partner.example")
        assert not store.is_known_missing("hal@partner.example")
    finally:
        found.close()


async def test_concurrent_lookups_of_one_address_search_once(
    lookup: RecipientLookup, slapd: Slapd
) -> None:
    _, cert = mint("ivy@partner.example")
    publish(slapd, "ivy@partner.example", cert)
    results = await asyncio.gather(*(lookup.find("ivy@partner.example") for _ in range(10)))
    assert results == [cert] * 10
    assert lookup.searches == 1


# -- behind the pipeline -------------------------------------------------------------------------
async def test_the_pipeline_encrypts_to_a_recipient_it_found_in_ldap(
    lookup: RecipientLookup, slapd: Slapd
) -> None:
    alice = ROOT.issue("alice@example.org")
    key, cert = mint("jo@partner.example")
    publish(slapd, "jo@partner.example", cert)
    inner = MemoryCertificates([alice])
    certificates = LookupCertificates(inner, lookup)
    policy = Policy(default_sign=SignMode.ALWAYS, default_encrypt=EncryptMode.MANDATORY)
    pipeline = SmimePipeline(
        PipelineSettings(("example.org",), policy, trust_anchors=(ROOT.cert,)), certificates
    )
    [copy] = await pipeline(
        Transaction("Q1", "127.0.0.1", "alice@example.org", ("jo@partner.example",), PLAIN)
    )
    assert "encrypt" in copy.actions
    assert isinstance(key, rsa.RSAPrivateKey)
    assert b"the numbers are attached" in decrypt(copy.content, key, cert)

    assert await certificates.encryption_certificate("alice@example.org") == alice.cert
    assert await certificates.encryption_certificate("kim@partner.example") is None
    _, kim = mint("kim@partner.example")
    await certificates.harvest([kim], "inbound")  # memory forgets kim as missing
    assert inner.harvested == [(kim, "inbound")]
    assert lookup.peek("kim@partner.example") == (False, None)
