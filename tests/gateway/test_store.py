"""The gateway's certificate store and users' key store, on real SQLite files and real keys.

Certificates are minted here by a small test CA (:class:`Pki`); keys live in the software
backend and on a SoftHSM token (the key tests run against both).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.keys import KeyBackend
from ca.keys.software import SoftwareBackend
from gateway.certs.keystore import KeyMismatch, KeyStore, KeyStoreError, parse_user_label
from gateway.certs.models import (
    AmbiguousCertificate,
    CertificateNotFound,
    RevocationStatus,
    Source,
    StoreError,
    UnusableCertificate,
    certificate_emails,
)
from gateway.certs.store import CertStore
from tests.certbuild import key_usage

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@functools.cache
def rsa_key(n: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Pki:
    """A root CA (EC), optionally an intermediate, issuing S/MIME certificates."""

    def __init__(self, name: str = "Store Test Root", *, intermediate: bool = False) -> None:
        self.root_key = ec_key()
        self.root = self._ca_cert(name, self.root_key, None, self.root_key)
        self.issuer_key: Key = self.root_key
        self.issuer = self.root
        if intermediate:
            key = ec_key()
            self.issuer = self._ca_cert(name + " Issuing", key, self.root, self.root_key)
            self.issuer_key = key

    @staticmethod
    def _ca_cert(name: str, key: Key, parent: x509.Certificate | None, signer: Key):
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(parent.subject if parent else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 100 * DAY)
            .not_valid_after(NOW + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    def issue(
        self,
        *emails: str,
        key: Key | None = None,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        eku: bool = True,
        serial: int | None = None,
        subject_email: str | None = None,
    ) -> tuple[x509.Certificate, Key]:
        key = key if key is not None else rsa_key(0)
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, (emails or ("nobody",))[0])]
        if subject_email:
            attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.issuer.subject)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(not_before or NOW - 10 * DAY)
            .not_valid_after(not_after or NOW + 365 * DAY)
            .add_extension(
                key_usage(
                    digital_signature=True, key_encipherment=is_rsa, key_agreement=not is_rsa
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        ExtendedKeyUsageOID.EMAIL_PROTECTION
                        if eku
                        else ExtendedKeyUsageOID.CLIENT_AUTH
                    ]
                ),
                critical=False,
            )
        )
        if emails:
            sans = [x509.RFC822Name(e) for e in emails]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.issuer_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CertStore]:
    with CertStore.open(f"sqlite:///{tmp_path}/gateway.db") as s:
        yield s


@pytest.fixture(params=["software", "pkcs11"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    backend: KeyBackend
    if request.param == "software":
        backend = SoftwareBackend(tmp_path / "keys", passphrase="correct horse")
    else:
        backend = request.getfixturevalue("softhsm_token").backend()
    with KeyStore(backend) as store:
        yield store


# -- the certificate store ----------------------------------------------------------------------
def test_a_stored_certificate_comes_back_with_everything_the_gateway_indexes(
    tmp_path: Path, pki: Pki
) -> None:
    cert, _ = pki.issue("Alice@Example.org", "alice.smith@example.org")
    dsn = f"sqlite:///{tmp_path}/gateway.db"
    with CertStore.open(dsn) as store:
        added = store.add(cert, Source.HARVESTED, at=NOW)

    assert added.emails == ("alice.smith@example.org", "alice@example.org")
    assert added.serial == format(cert.serial_number, "x")
    assert added.issuer == "CN=Store Test Root"
    assert added.source is Source.HARVESTED
    assert added.not_before == cert.not_valid_before_utc
    assert added.not_after == cert.not_valid_after_utc
    assert (added.can_sign, added.can_encrypt, added.key_algorithm) == (True, True, "rsa")
    assert added.revocation is RevocationStatus.UNKNOWN and added.revocation_checked_at is None
    assert not added.has_private_key
    assert added.certificate == cert
    assert added.added_at == NOW

    with CertStore.open(dsn) as reopened:  # it is on disk
        colon_fp = ":".join(added.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
        assert reopened.get(colon_fp) == added
        assert reopened.get("0x" + added.serial.upper()) == added
        assert reopened.get_by_certificate(cert) == added
        assert reopened.best_for_encryption("ALICE@example.org ", NOW) == added
    mode = sqlite3.connect(tmp_path / "gateway.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)


def test_adding_a_certificate_again_keeps_the_stronger_source_and_the_key_label(
    store: CertStore, pki: Pki
) -> None:
    cert, _ = pki.issue("bob@example.org")
    store.add(cert, "harvested")
    assert store.add(cert, Source.PKI, key_label="user:bob@example.org:1").source is Source.PKI
    store.mark_checked(format(cert.serial_number, "x"), RevocationStatus.GOOD, at=NOW)

    again = store.add(cert, Source.LDAP)

    assert again.source is Source.PKI
    assert again.key_label == "user:bob@example.org:1"
    assert again.revocation is RevocationStatus.GOOD and again.revocation_checked_at == NOW
    assert len(store.find(email="bob@example.org")) == 1


def test_the_newest_valid_certificate_wins_for_encryption(store: CertStore, pki: Pki) -> None:
    old, _ = pki.issue("carol@example.org", not_before=NOW - 300 * DAY)
    renewed, _ = pki.issue("carol@example.org", key=rsa_key(1), not_before=NOW - 5 * DAY)
    in_between, _ = pki.issue("carol@example.org", key=rsa_key(2), not_before=NOW - 100 * DAY)
    for cert in (old, renewed, in_between):
        store.add(cert, Source.LDAP)

    best = store.best_for_encryption("carol@example.org", NOW)

    assert best is not None and best.certificate == renewed
    assert len(store.find(email="carol@example.org")) == 3


def test_expired_revoked_and_not_yet_valid_certificates_are_never_chosen(
    store: CertStore, pki: Pki
) -> None:
    email = "dave@example.org"
    expired, _ = pki.issue(email, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    future, _ = pki.issue(email, key=rsa_key(1), not_before=NOW + DAY)
    revoked, _ = pki.issue(email, key=rsa_key(2), not_before=NOW - DAY)
    for cert in (expired, future, revoked):
        store.add(cert, Source.PKI, key_label="user:dave@example.org:1")
    store.mark_revoked(format(revoked.serial_number, "x"), at=NOW)

    assert store.best_for_encryption(email, NOW) is None
    assert store.best_for_signing(email, NOW) is None
    later = store.best_for_encryption(email, NOW + 2 * DAY)  # the future one becomes valid
    assert later is not None and later.certificate == future
    assert store.best_for_encryption(email, NOW - 10 * DAY).certificate == expired  # type: ignore[union-attr]


def test_an_ec_certificate_signs_and_is_encrypted_to_like_an_rsa_one(
    store: CertStore, pki: Pki
) -> None:
    """ECDH (RFC 5753) makes EC certificates with keyAgreement encryption certificates: the
    newest usable one wins, whatever its key type."""
    email = "erin@example.org"
    ec_cert, _ = pki.issue(email, key=ec_key(), not_before=NOW - DAY)
    store.add(ec_cert, Source.PKI, key_label="user:erin@example.org:2")

    record = store.get(format(ec_cert.serial_number, "x"))
    assert (record.key_algorithm, record.can_sign, record.can_encrypt) == ("ec", True, True)
    assert store.best_for_encryption(email, NOW) == record
    assert store.best_for_signing(email, NOW) == record

    rsa_cert, _ = pki.issue(email, not_before=NOW - 30 * DAY)  # older, RSA
    store.add(rsa_cert, Source.LDAP)
    assert store.best_for_encryption(email, NOW) == record
    newer_rsa, _ = pki.issue(email, not_before=NOW - DAY // 2)
    store.add(newer_rsa, Source.LDAP)
    assert store.best_for_encryption(email, NOW).certificate == newer_rsa  # type: ignore[union-attr]
    assert store.best_for_signing(email, NOW) == record  # no key for the RSA ones


def test_a_certificate_without_email_protection_is_stored_but_never_used(
    store: CertStore, pki: Pki
) -> None:
    cert, _ = pki.issue("frank@example.org", eku=False)
    record = store.add(cert, Source.HARVESTED, key_label="user:frank@example.org:1")
    assert (record.can_sign, record.can_encrypt) == (False, False)
    assert store.best_for_encryption("frank@example.org", NOW) is None
    assert store.best_for_signing("frank@example.org", NOW) is None


def test_signing_needs_a_private_key_the_gateway_holds(store: CertStore, pki: Pki) -> None:
    cert, _ = pki.issue("grace@example.org")
    store.add(cert, Source.LDAP)
    assert store.best_for_signing("grace@example.org", NOW) is None
    store.set_key_label(format(cert.serial_number, "x"), "user:grace@example.org:1")
    assert store.best_for_signing("grace@example.org", NOW).key_label == "user:grace@example.org:1"  # type: ignore[union-attr]


def test_legacy_subject_email_addresses_are_indexed_too(store: CertStore, pki: Pki) -> None:
    cert, _ = pki.issue(subject_email="Heidi@Example.ORG")
    assert store.add(cert, Source.HARVESTED).emails == ("heidi@example.org",)


def test_find_filters_by_email_source_and_expiry(store: CertStore, pki: Pki) -> None:
    soon, _ = pki.issue("ivan@example.org", not_after=NOW + 10 * DAY)
    late, _ = pki.issue(
        "ivan@example.org", key=rsa_key(1), not_before=NOW - DAY, not_after=NOW + 200 * DAY
    )
    other, _ = pki.issue("judy@example.org", not_after=NOW + 20 * DAY)
    gone, _ = pki.issue(
        "judy@example.org", key=rsa_key(2), not_before=NOW - 400 * DAY, not_after=NOW - DAY
    )
    store.add(soon, Source.PKI)
    store.add(late, Source.LDAP)
    store.add(other, Source.HARVESTED)
    store.add(gone, Source.HARVESTED)

    assert [r.certificate for r in store.find(email="IVAN@example.org")] == [late, soon]
    assert [r.certificate for r in store.find(source="harvested")] == [other, gone]
    expiring = store.expiring(30 * DAY, NOW)
    assert [r.certificate for r in expiring] == [soon, other]
    only_ivan = store.find(email="ivan@example.org", expiring_within=30 * DAY, at=NOW)
    assert [r.certificate for r in only_ivan] == [soon]
    assert len(store.find()) == 4


def test_ca_certificates_and_certificates_without_an_address_are_refused(
    store: CertStore, pki: Pki
) -> None:
    with pytest.raises(UnusableCertificate, match="CA certificate"):
        store.add(pki.root, Source.IMPORTED)
    nameless, _ = pki.issue()
    with pytest.raises(UnusableCertificate, match="no e-mail address"):
        store.add(nameless, Source.IMPORTED)
    with pytest.raises(StoreError, match="unknown certificate source"):
        store.add(pki.issue("x@example.org")[0], "carrier-pigeon")


def test_a_serial_shared_by_two_issuers_needs_the_fingerprint(store: CertStore, pki: Pki) -> None:
    a, _ = pki.issue("kim@example.org", serial=0x1234)
    b, _ = Pki("Another Root").issue("kim@example.org", serial=0x1234)
    store.add(a, Source.LDAP)
    record_b = store.add(b, Source.LDAP)

    with pytest.raises(AmbiguousCertificate, match="use the fingerprint"):
        store.get("1234")
    assert store.remove(record_b.fingerprint) == record_b
    assert store.get("00:12:34").certificate == a
    with pytest.raises(CertificateNotFound):
        store.get(record_b.fingerprint)
    with pytest.raises(StoreError, match="neither a serial"):
        store.get("not-hex")


def test_a_revocation_check_is_recorded_and_revoked_certificates_stay_revoked(
    store: CertStore, pki: Pki
) -> None:
    cert, _ = pki.issue("leo@example.org")
    serial = format(cert.serial_number, "x")
    store.add(cert, Source.LDAP)
    good = store.mark_checked(serial, "good", at=NOW - DAY)
    assert (good.revocation, good.revocation_checked_at) == (RevocationStatus.GOOD, NOW - DAY)

    revoked = store.mark_revoked(serial, revoked_at=NOW - 2 * DAY, at=NOW)

    assert revoked.revocation is RevocationStatus.REVOKED
    assert (revoked.revoked_at, revoked.revocation_checked_at) == (NOW - 2 * DAY, NOW)
    assert store.add(cert, Source.HARVESTED).revocation is RevocationStatus.REVOKED
    assert store.expiring(400 * DAY, NOW) == []


def test_recipients_not_found_are_remembered_until_the_ttl_runs_out(
    store: CertStore, pki: Pki
) -> None:
    until = store.remember_missing("Mallory@Example.org", timedelta(hours=1), at=NOW)
    assert until == NOW + timedelta(hours=1)
    assert store.is_known_missing("mallory@example.org", NOW + timedelta(minutes=59))
    assert not store.is_known_missing("mallory@example.org", NOW + timedelta(hours=1))
    assert not store.is_known_missing("nobody@example.org", NOW)

    store.remember_missing("mallory@example.org", timedelta(hours=2), at=NOW)  # refreshed
    assert store.is_known_missing("mallory@example.org", NOW + timedelta(minutes=90))
    assert store.purge_missing(NOW + timedelta(hours=3)) == 1

    store.remember_missing("nina@example.org", timedelta(days=1), at=NOW)
    store.add(pki.issue("nina@example.org")[0], Source.LDAP)  # found after all
    assert not store.is_known_missing("nina@example.org", NOW)


def test_chain_certificates_are_kept_to_send_along(store: CertStore) -> None:
    pki = Pki("Chain Root", intermediate=True)
    cert, _ = pki.issue("oscar@example.org")
    record = store.add(cert, Source.IMPORTED)
    assert store.chain_for(record) == []

    assert store.add_chain([pki.root, cert, pki.issuer]) == 2
    assert store.add_chain([pki.issuer]) == 0

    assert store.chain_for(record) == [pki.issuer, pki.root]


def test_naive_datetimes_and_bad_dsns_are_refused(store: CertStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="timezone-aware"):
        store.best_for_encryption("a@example.org", datetime(2030, 1, 1))
    with pytest.raises(StoreError, match="DSN"):
        CertStore.open("not a dsn")
    with pytest.raises(StoreError, match="cannot open"):
        CertStore.open(f"sqlite:///{tmp_path}/missing/dir/gateway.db")


def test_several_smtp_sessions_harvest_and_look_up_at_once(tmp_path: Path, pki: Pki) -> None:
    dsn = f"sqlite:///{tmp_path}/gateway.db"
    certs = [pki.issue(f"user{i}@example.org")[0] for i in range(12)]
    with CertStore.open(dsn) as store, ThreadPoolExecutor(max_workers=6) as pool:

        def harvest(cert: x509.Certificate) -> bool:
            store.add(cert, Source.HARVESTED)
            store.add(cert, Source.LDAP)  # the same one again, from another path
            email = certificate_emails(cert)[0]
            return store.best_for_encryption(email) is not None

        assert all(pool.map(harvest, certs + certs))
        assert len(store.find()) == 12
        assert {r.source for r in store.find()} == {Source.LDAP}


# -- users' keys (software backend and SoftHSM) --------------------------------------------------
def test_an_imported_key_pairs_with_its_certificate(
    keys: KeyStore, store: CertStore, pki: Pki
) -> None:
    cert, key = pki.issue("Peggy@example.org", key=rsa_key(3))

    label = keys.import_for_certificate(cert, "peggy@example.org", key)
    record = store.add(cert, Source.IMPORTED, key_label=label)

    assert label == "user:peggy@example.org:1"
    assert parse_user_label(label) == ("peggy@example.org", 1)
    assert keys.import_for_certificate(cert, "peggy@example.org", key) == label  # idempotent
    handle = keys.key_for(record)
    public = cert.public_key()
    assert isinstance(handle, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey)
    signature = handle.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    public.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    assert handle.decrypt(public.encrypt(b"session key", oaep), oaep) == b"session key"
    assert store.best_for_signing("peggy@example.org", NOW) == record


def test_an_imported_ec_key_signs_for_its_certificate(keys: KeyStore, pki: Pki) -> None:
    cert, key = pki.issue("quinn@example.org", key=ec_key())
    label = keys.import_for_certificate(cert, "quinn@example.org", key)
    handle = keys.backend.load(label)
    public = cert.public_key()
    assert isinstance(handle, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        handle.sign(b"message", ec.ECDSA(hashes.SHA256())), b"message", ec.ECDSA(hashes.SHA256())
    )


def test_a_key_that_does_not_match_the_certificate_is_refused(
    keys: KeyStore, store: CertStore, pki: Pki
) -> None:
    cert, _ = pki.issue("rupert@example.org", key=rsa_key(4))

    with pytest.raises(KeyMismatch, match="public keys differ"):
        keys.import_for_certificate(cert, "rupert@example.org", rsa_key(5))
    assert keys.labels_for("rupert@example.org") == []
    with pytest.raises(KeyStoreError, match="not for sybil@example.org"):
        keys.import_for_certificate(cert, "sybil@example.org", rsa_key(4))

    other = keys.import_private_key("rupert@example.org", rsa_key(5))
    record = store.add(cert, Source.IMPORTED, key_label=other)  # a wrong pairing slipped in
    with pytest.raises(KeyMismatch):
        keys.key_for(record)


def test_keys_generated_for_a_user_are_numbered(keys: KeyStore) -> None:
    first = keys.generate_for("Trent@example.org", "ec-p256")
    second = keys.generate_for("trent@example.org", "ec-p256")
    assert (first.label, second.label) == ("user:trent@example.org:1", "user:trent@example.org:2")
    assert keys.labels_for("trent@example.org") == [first.label, second.label]
    assert keys.find_label("trent@example.org", second.public_key()) == second.label


def test_an_encrypted_pem_key_is_imported_with_its_password(
    keys: KeyStore, store: CertStore, pki: Pki
) -> None:
    key = rsa_key(6)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    with pytest.raises(KeyStoreError, match="wrong password"):
        keys.import_key("victor@example.org", pem, "nope")
    label = keys.import_key("victor@example.org", pem, "s3cret")
    assert keys.find_label("victor@example.org", key.public_key()) == label

    keyless = store.add(pki.issue("victor@example.org")[0], Source.LDAP)
    with pytest.raises(KeyStoreError, match="no private key"):
        keys.key_for(keyless)
