"""CRL checks of every certificate the gateway encrypts to and of inbound signers
(``cmcgate.gateway.revocationCheck``), through the product: `cmcgate gateway run` from a
properties file, certificates imported with `cmcgate gateway certs import`, mail over SMTP.

The certificates come from the bundled CA (software keys): its CRL distribution points point
at its own HTTP listener, which serves the CRL it re-signs on every revocation (and counts
what it serves). "CRL server down" is a second bundled CA whose HTTP URL nobody listens on.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.service.http import CaService, ServiceThread
from gateway.certs.models import RevocationStatus
from gateway.certs.store import CertStore
from gateway.devservices import SmtpSink, free_port
from gateway.main import main
from gateway.smime import sign
from tests.gateway.certs import openssl
from tests.gateway.test_service import GatewayProcess, write_keys_passphrase

ACCOUNT, PRODUCT = "example.ra", "example-silver"
SENDER = "alice@corp.example"  # internal; every example.org address is external
CRL_PATH = "/crl/issuing.crl"


@dataclass
class Pki:
    """A bundled CA; ``service`` is its running HTTP(S) service, None when "down"."""

    directory: Path
    authority: CertificateAuthority
    service: CaService | None = None

    @property
    def root_pem(self) -> Path:
        return self.directory / "root-ca.pem"

    def issue(self, email: str, tmp: Path) -> tuple[rsa.RSAPrivateKey, x509.Certificate, Path]:
        """An RSA (encryption-capable) mailbox certificate; its PEM file with the chain."""
        key = rsa.generate_private_key(65537, 2048)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        der = csr.public_bytes(serialization.Encoding.DER)
        issued = self.authority.submit(der, ACCOUNT, PRODUCT, requested_by="test")
        assert issued.certificate is not None
        pem = tmp / f"{email}.pem"
        pem.write_bytes(
            b"".join(
                c.public_bytes(serialization.Encoding.PEM)
                for c in (issued.certificate, self.authority.issuing_cert)
            )
        )
        (tmp / f"{email}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return key, issued.certificate, pem

    def revoke(self, cert: x509.Certificate) -> None:
        self.authority.revoke(cert.serial_number, "key_compromise", by="test")

    def crl_fetches(self) -> int:
        assert self.service is not None
        return self.service.served[CRL_PATH]


def _init(directory: Path, http_port: int) -> None:
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=PRODUCT,
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    directory = tmp_path_factory.mktemp("live-ca") / "ca"
    http_port = free_port()
    _init(directory, http_port)
    thread = ServiceThread(
        CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    )
    service = thread.start()
    try:
        yield Pki(directory, service.ca, service)
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    directory = tmp_path_factory.mktemp("down-ca") / "ca"
    _init(directory, free_port())  # its CRL URL: a port nobody listens on
    with CertificateAuthority.open(directory / "ca.yaml") as authority:
        yield Pki(directory, authority)


@dataclass
class Gateway:
    config: Path
    port: int
    process: GatewayProcess
    tmp: Path

    def send(self, recipient: str, message: bytes | None = None, sender: str = SENDER) -> None:
        body = (
            message
            or (
                f"From: {sender}\r\nTo: {recipient}\r\nSubject: hello\r\n\r\nConfidential.\r\n"
            ).encode()
        )
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            client.sendmail(sender, [recipient], body)

    def refusal(self, recipient: str, message: bytes | None = None, sender: str = SENDER) -> int:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            self.send(recipient, message, sender)
        return refused.value.smtp_code

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")

    def record(self, cert: x509.Certificate) -> RevocationStatus | None:
        store = CertStore.open(f"sqlite:///{self.tmp / 'gateway.db'}")
        try:
            found = [r for r in store.find() if r.serial == f"{cert.serial_number:x}"]
        finally:
            store.close()
        return found[0].revocation if found else None

    def restart(self) -> None:
        self.process.stop()
        self.process = GatewayProcess(self.config, self.port).start()


def start_gateway(
    tmp: Path, sink: SmtpSink, mode: str, pkis: list[Pki], imports: list[Path], extra: str = ""
) -> Gateway:
    write_keys_passphrase(tmp)
    port = free_port()
    config = tmp / "gateway.properties"
    roots = ",".join(str(p.root_pem) for p in pkis)
    config.write_text(
        f"cmcgate.gateway.listen=127.0.0.1:{port}\n"
        f"cmcgate.gateway.nextHop=127.0.0.1:{sink.port}\n"
        "cmcgate.gateway.nextHopTls=off\n"
        "cmcgate.gateway.internalDomains=corp.example\n"
        f"cmcgate.gateway.stateDir={tmp / 'state'}\n"
        f"cmcgate.gateway.trustedRoots={roots}\n"
        f"cmcgate.gateway.revocationCheck={mode}\n"
        "cmcgate.gateway.revocationTimeout=2\n"
        f"cmcgate.store.dsn=sqlite:///{tmp / 'gateway.db'}\n"
        "cmcgate.keys.backend=software\n"
        f"cmcgate.keys.directory={tmp / 'keys'}\n"
        f"cmcgate.keys.passphraseFile={tmp / 'keys.pass'}\n"
        "cmcgate.policy.sign=never\n"
        "cmcgate.policy.encrypt=allow\n" + extra
    )
    for pem in imports:  # `cmcgate gateway certs import`, in this process (it is quicker)
        email = pem.name.removesuffix(".pem")
        argv = ["gateway", "certs", "import", "--config", str(config), "--email", email]
        assert main([*argv, "--cert", str(pem)]) == 0
    return Gateway(config, port, GatewayProcess(config, port).start(), tmp)


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.process.stop()


def mandatory(email: str, missing: str = "reject") -> str:
    return (
        f"cmcgate.policy.recipient.{email}.encrypt=mandatory\n"
        f"cmcgate.policy.recipient.{email}.missingCertificate={missing}\n"
    )


def _encrypted(content: bytes) -> bool:
    return b"application/pkcs7-mime" in content and b"Confidential." not in content


# -- a revoked recipient certificate is never used for encryption ---------------------------------
def test_a_revoked_imported_certificate_is_not_encrypted_to(
    live: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    _, carol, carol_pem = live.issue("carol@example.org", tmp_path)
    _, dave, dave_pem = live.issue("dave@example.org", tmp_path)
    _, erin, erin_pem = live.issue("erin@example.org", tmp_path)
    live.revoke(carol)
    live.revoke(dave)
    gateway = start_gateway(
        tmp_path, smtp_sink, "soft", [live], [carol_pem, dave_pem, erin_pem],
        mandatory("carol@example.org"),
    )  # fmt: skip
    gateways.append(gateway)

    # mandatory: the only certificate is revoked -> no certificate -> the policy's reject
    assert gateway.refusal("carol@example.org") == 550
    # allow: sent, but not encrypted to a revoked certificate
    gateway.send("dave@example.org")
    [to_dave] = smtp_sink.received()
    assert not _encrypted(to_dave.content)
    # a good certificate of the same CA is used
    gateway.send("erin@example.org")
    to_erin = smtp_sink.received()[-1]
    assert _encrypted(to_erin.content)
    opened = openssl(
        "cms", "-decrypt", "-recip", erin_pem, "-inkey", tmp_path / "erin@example.org.key",
        data=to_erin.content,
    )  # fmt: skip
    assert b"Confidential." in opened
    # the store knows: the revoked ones are marked, the good one was checked
    assert gateway.record(carol) is RevocationStatus.REVOKED
    assert gateway.record(dave) is RevocationStatus.REVOKED
    assert gateway.record(erin) is RevocationStatus.GOOD


def test_when_the_certificate_in_use_is_revoked_the_recipients_other_one_is_used(
    live: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    """A CRL is believed until its nextUpdate; the next one (here: after a restart with the
    cached copy removed) brings the revocation, and fred's other certificate is used."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    issued = {d: live.issue("fred@example.org", d) for d in (first, second)}
    gateway = start_gateway(tmp_path, smtp_sink, "soft", [live], [v[2] for v in issued.values()])
    gateways.append(gateway)
    gateway.send("fred@example.org")
    used = [
        d for d, (_, cert, _) in issued.items() if gateway.record(cert) is RevocationStatus.GOOD
    ]
    assert len(used) == 1  # the one chosen was checked
    [other] = [d for d in issued if d not in used]
    live.revoke(issued[used[0]][1])
    for cached in (tmp_path / "state" / "crl").glob("*.crl"):
        cached.unlink()
    gateway.restart()
    gateway.send("fred@example.org")
    assert gateway.record(issued[used[0]][1]) is RevocationStatus.REVOKED
    assert gateway.record(issued[other][1]) is RevocationStatus.GOOD
    last = smtp_sink.received()[-1]
    assert _encrypted(last.content)
    opened = openssl(
        "cms", "-decrypt", "-recip", issued[other][2], "-inkey", other / "fred@example.org.key",
        data=last.content,
    )  # fmt: skip
    assert b"Confidential." in opened


# -- the CRL is fetched once per nextUpdate, in memory and across restarts -----------------------
def test_the_crl_is_fetched_once_until_its_next_update_also_after_a_restart(
    live: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    _, _, gina_pem = live.issue("gina@example.org", tmp_path)
    _, _, hank_pem = live.issue("hank@example.org", tmp_path)
    gateway = start_gateway(tmp_path, smtp_sink, "soft", [live], [gina_pem, hank_pem])
    gateways.append(gateway)
    before = live.crl_fetches()
    gateway.send("gina@example.org")
    assert live.crl_fetches() == before + 1
    gateway.send("gina@example.org")
    gateway.send("hank@example.org")  # another certificate, the same CRL
    assert live.crl_fetches() == before + 1
    cached = list((tmp_path / "state" / "crl").glob("*.crl"))
    assert len(cached) == 1
    assert (
        x509.load_der_x509_crl(cached[0].read_bytes()).issuer == live.authority.issuing_cert.subject
    )
    gateway.restart()  # a new process: the copy in stateDir/crl is still current
    gateway.send("hank@example.org")
    assert live.crl_fetches() == before + 1
    assert all(_encrypted(m.content) for m in smtp_sink.received())


# -- the CRL server is down: soft uses the certificate, hard answers 4xx --------------------------
def test_crl_down_soft_uses_the_certificate_and_logs_a_warning(
    down: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    _, _, ivan_pem = down.issue("ivan@example.org", tmp_path)
    gateway = start_gateway(
        tmp_path, smtp_sink, "soft", [down], [ivan_pem], mandatory("ivan@example.org")
    )
    gateways.append(gateway)
    gateway.send("ivan@example.org")
    [delivered] = smtp_sink.received()
    assert _encrypted(delivered.content)
    log = gateway.log()
    assert "WARNING" in log and "used anyway (revocationCheck=soft)" in log


def test_crl_down_hard_refuses_mandatory_mail_with_451(
    down: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    _, _, judy_pem = down.issue("judy@example.org", tmp_path)
    _, _, kate_pem = down.issue("kate@example.org", tmp_path)
    gateway = start_gateway(
        tmp_path, smtp_sink, "hard", [down], [judy_pem, kate_pem], mandatory("judy@example.org")
    )
    gateways.append(gateway)
    assert gateway.refusal("judy@example.org") == 451
    assert smtp_sink.received() == []
    assert "revocation status of" in gateway.log() and "unavailable" in gateway.log()
    # encrypt=allow: as with a directory that is down, that recipient's copy goes unencrypted
    gateway.send("kate@example.org")
    [to_kate] = smtp_sink.received()
    assert not _encrypted(to_kate.content)


# -- inbound signers ---------------------------------------------------------------------------
def _signed_by(pki: Pki, email: str, tmp: Path) -> tuple[x509.Certificate, bytes]:
    key, cert, _ = pki.issue(email, tmp)
    message = (
        f"From: {email}\r\nTo: bob@corp.example\r\nSubject: signed\r\n\r\nSigned text.\r\n"
    ).encode()
    return cert, sign(message, key, cert, [pki.authority.issuing_cert])


def _verdict(content: bytes) -> str:
    for line in content.split(b"\r\n"):
        if line.lower().startswith(b"x-cmcgate-signature:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no X-Cmcgate-Signature field")


def test_an_inbound_signature_by_a_revoked_signer_is_invalid_and_not_harvested(
    live: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    leo, from_leo = _signed_by(live, "leo@example.org", tmp_path)
    mia, from_mia = _signed_by(live, "mia@example.org", tmp_path)
    live.revoke(leo)
    gateway = start_gateway(tmp_path, smtp_sink, "soft", [live], [])
    gateways.append(gateway)
    gateway.send("bob@corp.example", from_leo, sender="leo@example.org")
    gateway.send("bob@corp.example", from_mia, sender="mia@example.org")
    to_bob_from_leo, to_bob_from_mia = smtp_sink.received()
    assert _verdict(to_bob_from_leo.content) == "invalid; signer=leo@example.org"
    assert _verdict(to_bob_from_mia.content) == "valid; signer=mia@example.org"
    assert gateway.record(leo) is None  # never harvested as leo's encryption certificate
    assert gateway.record(mia) is not None


def test_crl_down_hard_refuses_inbound_signed_mail_with_451(
    down: Pki, smtp_sink: SmtpSink, gateways: list[Gateway], tmp_path: Path
) -> None:
    _, from_nora = _signed_by(down, "nora@example.org", tmp_path)
    gateway = start_gateway(tmp_path, smtp_sink, "hard", [down], [])
    gateways.append(gateway)
    assert gateway.refusal("bob@corp.example", from_nora, sender="nora@example.org") == 451
    assert smtp_sink.received() == []
