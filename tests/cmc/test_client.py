"""The CMC client against a real HTTPS responder (client-cert TLS on loopback) whose answers
come from the library's own server half: parse_request, verify_request, build_full_response
and a test CA that really issues certificates for the CSRs it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cmc.client import (
    CmcClient,
    EnrollmentPending,
    EnrollmentResult,
    NoRequestSigner,
    PendingEnrollment,
    classify,
    client_from_settings,
)
from cmc.errors import (
    CMCFailure,
    CMCTryLater,
    IssuerMismatch,
    NonceMismatch,
    TemporaryFailure,
    UntrustedSigner,
)
from cmc.messages.api import (
    CertificationRequest,
    CMCFailInfo,
    CMCStatus,
    FullPKIRequest,
    PendInfo,
    RevokeRequest,
    Signer,
    StatusInfo,
    build_full_response,
    parse_request,
    verify_request,
)
from cmc.messages.cms import verify_chain, verify_signed_data
from cmc.transport.http import CmcTransport, TransportSettings, TransportUnavailable
from gateway.main import main
from tests.certbuild import email_csr
from tests.cmc.conftest import make_cert
from tests.cmc.tlsresponder import Reply, SeenRequest, TlsResponder
from tests.cmc.transport_pki import P12_PASSWORD, TransportPki, mint_transport_pki

ALICE = "alice@example.org"

# --- the CA side ----------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmcgate client tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class CmcPki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    stranger_key: ec.EllipticCurvePrivateKey
    stranger: x509.Certificate

    def ca_signer(self) -> Signer:
        return Signer(self.ca_key, self.ca, (self.root,))

    def issue(self, public_key: object, email: str, serial: int | None = None) -> x509.Certificate:
        return make_cert(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]),
            public_key,
            self.ca.subject,
            self.ca_key,
            ca=False,
            not_before=datetime.now(UTC) - timedelta(hours=1),
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
            email=email,
            serial=serial,
        )


def _ca_cert(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, by: object
) -> x509.Certificate:
    return make_cert(
        _name(name),
        key.public_key(),
        issuer,
        by,
        ca=True,
        not_before=datetime.now(UTC) - timedelta(days=1),
    )


@pytest.fixture(scope="module")
def cmc_pki() -> CmcPki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca_cert("Client Test Root", root_key, _name("Client Test Root"), root_key)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_cert("Client Test Issuing CA", ca_key, root.subject, root_key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _ca_cert("Stranger", stranger_key, _name("Stranger"), stranger_key)
    return CmcPki(root_key, root, ca_key, ca, stranger_key, stranger)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TransportPki:
    return mint_transport_pki(tmp_path_factory.mktemp("client-tls"))


Answer = Callable[["CaServer", FullPKIRequest], bytes | Reply]


@dataclass
class CaServer:
    """The server half: verifies each request, then answers with the next scripted answer."""

    pki: CmcPki
    tls: TransportPki
    answers: list[Answer]
    received: list[FullPKIRequest] = field(default_factory=list)
    keys: dict[int, object] = field(default_factory=dict)  # transactionId -> requested key
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, seen: SeenRequest) -> Reply:
        request = parse_request(seen.body)
        assert isinstance(request, FullPKIRequest)
        self.verify(request)
        with self.lock:
            self.received.append(request)
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        result = answer(self, request)
        return result if isinstance(result, Reply) else Reply(body=result)

    def verify(self, request: FullPKIRequest) -> None:
        csrs = [r.csr for r in request.pki_data.requests if isinstance(r, CertificationRequest)]
        if csrs:
            self.keys[request.transaction_id or 0] = csrs[0].public_key()
        if request.certificates:  # signed by the access certificate: must be ours
            verified = verify_request(request)
            assert verified.signer_certificate is not None
            verify_chain(
                verified.signer_certificate, request.certificates, [self.tls.ca.certificate]
            )
        elif csrs:
            verify_request(request)  # POP: signed by the key being certified
        else:  # a self-signed poll: the server knows the key from the first request
            key = self.keys[request.transaction_id or 0]
            verify_signed_data(request.der, signer_public_key=key)  # type: ignore[arg-type]

    def requested_key(self, request: FullPKIRequest) -> object:
        return self.keys[request.transaction_id or 0]


def issue(server: CaServer, request: FullPKIRequest, **kwargs: object) -> bytes:
    issued = server.pki.issue(server.requested_key(request), ALICE)
    signer = kwargs.pop("signer", server.pki.ca_signer())
    return build_full_response(
        signer=signer,  # type: ignore[arg-type]
        statuses=[StatusInfo(CMCStatus.SUCCESS, (1,), "issued")],
        request=request,
        certificates=[issued, server.pki.ca],
        **kwargs,  # type: ignore[arg-type]
    ).der


def status(status: StatusInfo) -> Answer:
    def answer(server: CaServer, request: FullPKIRequest) -> bytes:
        return build_full_response(
            signer=server.pki.ca_signer(), statuses=[status], request=request
        ).der

    return answer


class CmcResponder(TlsResponder):
    """The TLS responder, its replies computed by a handler instead of scripted."""

    handler: Callable[[SeenRequest], Reply]

    def _record(self, seen: SeenRequest) -> Reply:
        super()._record(seen)
        try:
            return self.handler(seen)
        except Exception as exc:  # surfaces in the test as HttpStatusRefused
            return Reply(status=400, content_type="text/plain", body=repr(exc).encode())


@dataclass
class Setup:
    server: CaServer
    responder: CmcResponder
    settings: TransportSettings
    pki: CmcPki
    tls: TransportPki

    def client(self, *, sign_with_access: bool = True, **kwargs: object) -> CmcClient:
        return client_from_settings(
            self.settings,
            trust_anchors=[self.pki.root],
            issuer_dn=kwargs.pop("issuer_dn", self.pki.ca.subject),  # type: ignore[arg-type]
            sign_with_access=sign_with_access,
        )


@pytest.fixture
def ca(cmc_pki: CmcPki, tls: TransportPki) -> Iterator[Setup]:
    server = CaServer(cmc_pki, tls, [issue])
    responder = CmcResponder(
        cert_file=tls.server.cert_file, key_file=tls.server.key_file, client_ca_file=tls.ca_file
    )
    responder.handler = server
    responder.start()
    settings = TransportSettings(
        url=responder.url(),
        access_p12=tls.client_p12,
        access_p12_password=P12_PASSWORD,
        trust_anchors=(tls.ca.certificate,),
        connect_timeout=2.0,
        read_timeout=5.0,
        retries=3,
        backoff=0.01,
    )
    yield Setup(server, responder, settings, cmc_pki, tls)
    responder.stop()


def new_user(
    email: str = ALICE,
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, email_csr(key, email)


def same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


# --- enrolment ------------------------------------------------------------------------------


def test_new_user_enrols_over_https_and_gets_a_certificate_for_their_key(ca: Setup) -> None:
    key, csr = new_user()
    with ca.client() as client:
        result = client.enroll(csr, key)
    assert isinstance(result, EnrollmentResult)
    assert same_key(result.certificate, key)
    assert result.certificate.issuer == ca.pki.ca.subject
    assert result.chain == (ca.pki.ca, ca.pki.root)
    assert result.status_string == "issued"
    (seen,) = ca.responder.seen
    assert seen.client_subject == "cmcgate access"  # TLS client auth with the access P12
    (received,) = ca.server.received
    assert received.transaction_id == result.transaction_id
    assert received.sender_nonce is not None
    # SwissSign/Totemo practice: the access certificate signs the Full PKI Request
    assert received.signer_id.serial_number == ca.tls.client.certificate.serial_number
    assert ca.tls.client.certificate in received.certificates


def test_user_enrols_with_a_request_signed_by_their_own_key(ca: Setup) -> None:
    key, csr = new_user()
    with ca.client(sign_with_access=False) as client:
        result = client.enroll(csr, key)
    assert same_key(result.certificate, key)
    (received,) = ca.server.received
    assert received.certificates == ()
    assert received.signer_id.kind == "subjectKeyIdentifier"
    assert verify_request(received).signer_public_key == key.public_key()


def test_ca_refusing_the_identity_is_a_permanent_failure_with_its_fail_info(ca: Setup) -> None:
    ca.server.answers = [
        status(
            StatusInfo(
                CMCStatus.FAILED, (1,), "unknown mailbox", fail_info=CMCFailInfo.BAD_IDENTITY
            )
        )
    ]
    key, csr = new_user()
    with ca.client() as client, pytest.raises(CMCFailure) as caught:
        client.enroll(csr, key)
    assert caught.value.fail_info == "badIdentity"
    assert caught.value.status_string == "unknown mailbox"
    assert classify(caught.value) == "permanent"


def test_busy_ca_saying_try_later_is_a_temporary_failure(ca: Setup) -> None:
    ca.server.answers = [
        status(StatusInfo(CMCStatus.FAILED, (1,), fail_info=CMCFailInfo.TRY_LATER))
    ]
    key, csr = new_user()
    with ca.client() as client, pytest.raises(CMCTryLater) as caught:
        client.enroll(csr, key)
    assert isinstance(caught.value, TemporaryFailure)
    assert classify(caught.value) == "temporary"


def pending(token: bytes) -> Answer:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    return status(
        StatusInfo(CMCStatus.PENDING, (1,), "awaiting approval", pend_info=PendInfo(token, when))
    )


def issue_for_token(token: bytes) -> Answer:
    def answer(server: CaServer, request: FullPKIRequest) -> bytes:
        assert request.pki_data.single_value("queryPending") == token
        return issue(server, request)

    return answer


@pytest.mark.parametrize("sign_with_access", [True, False], ids=["access", "self-signed"])
def test_pending_enrolment_is_saved_polled_with_query_pending_and_issued(
    ca: Setup, sign_with_access: bool
) -> None:
    ca.server.answers = [pending(b"order-42"), issue_for_token(b"order-42")]
    key, csr = new_user()
    with ca.client(sign_with_access=sign_with_access) as client:
        with pytest.raises(EnrollmentPending) as caught:
            client.enroll(csr, key)
        assert classify(caught.value) == "pending"
        state = caught.value.pending
        assert state.pend_token == b"order-42"
        assert state.status_string == "awaiting approval"
        # the gateway persists it as JSON and polls from another process later
        restored = PendingEnrollment.from_dict(json.loads(json.dumps(state.to_dict())))
        assert restored == state
        result = client.poll(restored, key=None if sign_with_access else key)
    assert same_key(result.certificate, key)
    first, poll = ca.server.received
    assert poll.transaction_id == first.transaction_id == result.transaction_id
    assert poll.pki_data.requests == ()
    assert poll.sender_nonce != first.sender_nonce
    assert poll.pki_data.single_value("recipientNonce") == state.server_nonce  # RFC 5272 §6.6


def test_pending_again_on_poll_gives_a_fresh_pending_state(ca: Setup) -> None:
    ca.server.answers = [pending(b"t1"), pending(b"t2")]
    key, csr = new_user()
    with ca.client() as client:
        with pytest.raises(EnrollmentPending) as first:
            client.enroll(csr, key)
        with pytest.raises(EnrollmentPending) as second:
            client.poll(first.value.pending)
    assert second.value.pending.pend_token == b"t2"
    assert second.value.pending.request_der == first.value.pending.request_der


def test_pending_without_a_token_is_polled_by_resending_the_original_request(
    ca: Setup,
) -> None:
    ca.server.answers = [pending(b""), issue]
    key, csr = new_user()
    with ca.client() as client:
        with pytest.raises(EnrollmentPending) as caught:
            client.enroll(csr, key)
        result = client.poll(caught.value.pending)
    assert same_key(result.certificate, key)
    first, again = ca.responder.seen
    assert again.body == first.body


def test_polling_a_self_signed_request_without_the_key_is_refused(ca: Setup) -> None:
    ca.server.answers = [pending(b"t")]
    key, csr = new_user()
    with ca.client(sign_with_access=False) as client:
        with pytest.raises(EnrollmentPending) as caught:
            client.enroll(csr, key)
        with pytest.raises(NoRequestSigner):
            client.poll(caught.value.pending)


# --- transport trouble ----------------------------------------------------------------------


def test_ca_answering_503_once_is_retried_and_the_user_still_enrols(ca: Setup) -> None:
    def unavailable(server: CaServer, request: FullPKIRequest) -> Reply:
        return Reply(status=503, content_type="text/plain", body=b"maintenance")

    ca.server.answers = [unavailable, issue]
    key, csr = new_user()
    with ca.client() as client:
        result = client.enroll(csr, key)
    assert same_key(result.certificate, key)
    assert len(ca.responder.seen) == 2
    assert ca.responder.seen[0].body == ca.responder.seen[1].body  # same request, resent


def test_ca_down_is_a_temporary_failure(ca: Setup) -> None:
    ca.responder.stop()
    key, csr = new_user()
    with ca.client() as client, pytest.raises(TransportUnavailable) as caught:
        client.enroll(csr, key)
    assert caught.value.attempts == 3
    assert classify(caught.value) == "temporary"


# --- responses that must not be believed -----------------------------------------------------


def test_response_signed_by_an_unknown_key_is_untrusted(ca: Setup) -> None:
    stranger = Signer(ca.pki.stranger_key, ca.pki.stranger)
    ca.server.answers = [lambda server, request: issue(server, request, signer=stranger)]
    key, csr = new_user()
    with ca.client() as client, pytest.raises(UntrustedSigner) as caught:
        client.enroll(csr, key)
    assert classify(caught.value) == "permanent"


def test_response_with_a_foreign_recipient_nonce_is_rejected(ca: Setup) -> None:
    ca.server.answers = [
        lambda server, request: issue(server, request, recipient_nonce=b"\x00" * 16)
    ]
    key, csr = new_user()
    with ca.client() as client, pytest.raises(NonceMismatch):
        client.enroll(csr, key)


def test_certificate_from_another_issuer_than_configured_is_rejected(ca: Setup) -> None:
    key, csr = new_user()
    with ca.client(issuer_dn=_name("Some Other Issuing CA")) as client:
        with pytest.raises(IssuerMismatch):
            client.enroll(csr, key)


def test_csr_for_another_key_is_refused_before_anything_is_sent(ca: Setup) -> None:
    key, _ = new_user()
    _, other_csr = new_user()
    with ca.client() as client, pytest.raises(ValueError):
        client.enroll(other_csr, key)
    assert ca.responder.seen == []


# --- getCert and revoke --------------------------------------------------------------------


def test_gateway_fetches_a_recipients_certificate_with_get_cert(ca: Setup) -> None:
    key, _ = new_user("bob@example.org")
    existing = ca.pki.issue(key.public_key(), "bob@example.org", serial=0x4242)

    def answer(server: CaServer, request: FullPKIRequest) -> bytes:
        (asked,) = request.pki_data.find("getCert")
        assert asked.value.serial_number == 0x4242
        assert asked.value.issuer == server.pki.ca.subject
        return build_full_response(
            signer=server.pki.ca_signer(),
            statuses=[StatusInfo(CMCStatus.SUCCESS, (asked.body_part_id,))],
            request=request,
            certificates=[existing, server.pki.ca],
        ).der

    ca.server.answers = [answer]
    with ca.client() as client:
        found = client.get_cert(ca.pki.ca.subject, 0x4242)
    assert found == existing


def test_get_cert_needs_a_request_signer(ca: Setup) -> None:
    with ca.client(sign_with_access=False) as client, pytest.raises(NoRequestSigner):
        client.get_cert(ca.pki.ca.subject, 1)
    assert ca.responder.seen == []


def test_admin_revokes_a_lost_key(ca: Setup) -> None:
    def answer(server: CaServer, request: FullPKIRequest) -> bytes:
        (asked,) = request.pki_data.find("revokeRequest")
        return build_full_response(
            signer=server.pki.ca_signer(),
            statuses=[StatusInfo(CMCStatus.SUCCESS, (asked.body_part_id,), "revoked")],
            request=request,
        ).der

    ca.server.answers = [answer]
    with ca.client() as client:
        result = client.revoke(ca.pki.ca.subject, 0x1234, "key_compromise", comment="laptop stolen")
    assert result.status_string == "revoked"
    (received,) = ca.server.received
    assert received.pki_data.single_value("revokeRequest") == RevokeRequest(
        ca.pki.ca.subject, 0x1234, "key_compromise", comment="laptop stolen"
    )
    assert received.transaction_id == result.transaction_id


def test_revocation_refused_by_the_ca_is_a_cmc_failure(ca: Setup) -> None:
    ca.server.answers = [
        status(
            StatusInfo(CMCStatus.FAILED, (1,), "no such cert", fail_info=CMCFailInfo.BAD_CERT_ID)
        )
    ]
    with ca.client() as client, pytest.raises(CMCFailure) as caught:
        client.revoke(ca.pki.ca.subject, 0x99)
    assert caught.value.fail_info == "badCertId"


def test_client_over_a_bare_transport_with_an_explicit_clock(ca: Setup) -> None:
    """The gateway builds the client itself; a clock far in the future fails validity."""
    key, csr = new_user()
    later = datetime.now(UTC) + timedelta(days=4000)
    with CmcTransport(ca.settings) as transport:
        client = CmcClient(transport, trust_anchors=[ca.pki.root], clock=lambda: later)
        with pytest.raises(UntrustedSigner):
            client.enroll(csr, key)


def test_classify_treats_unexpected_errors_as_temporary() -> None:
    assert classify(RuntimeError("bug")) == "temporary"
    assert classify(ValueError("config")) == "temporary"


# --- the command line -----------------------------------------------------------------------


def cli_flags(ca: Setup, tmp_path: Path) -> list[str]:
    p12 = tmp_path / "access.p12"
    p12.write_bytes(ca.tls.client_p12)
    password = tmp_path / "p12.pw"
    password.write_bytes(P12_PASSWORD + b"\n")
    roots = tmp_path / "roots.pem"
    roots.write_bytes(
        ca.tls.ca.certificate.public_bytes(serialization.Encoding.PEM)
        + ca.pki.root.public_bytes(serialization.Encoding.PEM)
    )
    return [
        "--url",
        ca.settings.url,
        "--p12",
        str(p12),
        "--p12-password-file",
        str(password),
        "--roots",
        str(roots),
        "--issuer-dn",
        ca.pki.ca.subject.rfc4514_string(),
    ]


def test_operator_enrols_a_user_from_the_command_line(
    ca: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_out, cert_out, chain_out = (tmp_path / n for n in ("a.key", "a.pem", "chain.pem"))
    argv = ["cmc", "enroll", "--email", ALICE, "--name", "Alice Example", "--key-type"]
    argv += ["ec-p256", "--key-out", str(key_out), "--cert-out", str(cert_out)]
    argv += ["--chain-out", str(chain_out), *cli_flags(ca, tmp_path)]
    assert main(argv) == 0
    key = serialization.load_pem_private_key(key_out.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(cert_out.read_bytes())
    assert cert.public_key() == key.public_key()
    assert x509.load_pem_x509_certificates(chain_out.read_bytes()) == [ca.pki.ca, ca.pki.root]
    assert key_out.stat().st_mode & 0o077 == 0
    (received,) = ca.server.received
    csr = received.pki_data.requests[0].csr  # type: ignore[union-attr]
    assert csr.subject.rfc4514_string() == "CN=Alice Example"
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == [ALICE]
    assert f"enrolled {ALICE}" in capsys.readouterr().out


def test_cli_enrolment_left_pending_prints_the_token_and_exits_3(
    ca: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca.server.answers = [pending(b"\x01\x02order")]
    key_out, cert_out = tmp_path / "a.key", tmp_path / "a.pem"
    argv = ["cmc", "enroll", "--email", ALICE, "--key-type", "ec-p256"]
    argv += ["--key-out", str(key_out), "--cert-out", str(cert_out), *cli_flags(ca, tmp_path)]
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "pending" in out and b"\x01\x02order".hex() in out
    assert key_out.exists() and not cert_out.exists()
    state = PendingEnrollment.from_dict(json.loads((tmp_path / "a.pem.pending.json").read_text()))
    assert state.pend_token == b"\x01\x02order"


def test_cli_enrolment_refused_prints_one_line_and_exits_2(
    ca: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca.server.answers = [
        status(StatusInfo(CMCStatus.FAILED, (1,), "no", fail_info=CMCFailInfo.BAD_IDENTITY))
    ]
    key_out = tmp_path / "a.key"
    argv = ["cmc", "enroll", "--email", ALICE, "--key-type", "ec-p256"]
    argv += ["--key-out", str(key_out), "--cert-out", str(tmp_path / "a.pem")]
    assert main([*argv, *cli_flags(ca, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "badIdentity" in err
    assert not key_out.exists()  # refused: the key is useless


def test_cli_enrol_without_connection_settings_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cmc", "enroll", "--email", ALICE, "--url", "https://ca.invalid/"]) == 2
    assert "--p12, --roots" in capsys.readouterr().err
