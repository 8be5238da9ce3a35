"""Client request -> server-half parse -> response -> client validation, every outcome."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from cmc.errors import (
    CMCFailure,
    CMCPending,
    CMCTryLater,
    IssuerMismatch,
    KeyMismatch,
    NonceMismatch,
    SignatureInvalid,
    SignerNotFound,
    TamperedContent,
    TemporaryFailure,
    TransactionIdMismatch,
    UntrustedSigner,
)
from cmc.messages.api import (
    CMCFailInfo,
    CMCStatus,
    FullPKIRequest,
    GetCert,
    PendInfo,
    RevokeRequest,
    Signer,
    StatusInfo,
    build_full_request,
    build_full_response,
    build_get_cert_request,
    build_query_pending,
    build_revoke_request,
    control,
    parse_request,
    refusal_status,
    unsupported_controls,
    validate_response,
    verify_request,
)
from cmc.messages.cms import verify_signed_data
from tests.cmc.conftest import NOW, PkiFixture, make_csr


def ca_signer(pki: PkiFixture) -> Signer:
    return Signer(pki.ca_key, pki.ca, (pki.root,))


def client_request(pki: PkiFixture, email: str = "alice@example.org") -> FullPKIRequest:
    csr = make_csr(pki.user_rsa, email)
    return build_full_request(signer=Signer(pki.user_rsa), requests=[csr])


def server_receives(data: bytes) -> FullPKIRequest:
    request = parse_request(data)
    assert isinstance(request, FullPKIRequest)
    verify_request(request)
    return request


def success_response(pki: PkiFixture, request: FullPKIRequest, **kwargs: object) -> bytes:
    csr = request.pki_data.requests[0].csr  # type: ignore[union-attr]
    issued = pki.issue(csr.public_key(), "alice@example.org")
    status = StatusInfo(CMCStatus.SUCCESS, (request.pki_data.requests[0].body_part_id,))
    response = build_full_response(
        signer=kwargs.pop("signer", ca_signer(pki)),  # type: ignore[arg-type]
        statuses=[status],
        request=request,
        certificates=[issued, pki.ca],
        **kwargs,  # type: ignore[arg-type]
    )
    return response.der


def test_new_user_enrols_and_gets_a_certificate_for_their_key(pki: PkiFixture) -> None:
    request = client_request(pki)
    received = server_receives(request.der)
    assert received.transaction_id == request.transaction_id
    result = validate_response(
        success_response(pki, received),
        request=request,
        trust_anchors=[pki.root],
        issuer_dn=pki.ca.subject,
        at=NOW,
    )
    assert result.issued is not None
    assert result.issued.public_key() == pki.user_rsa.public_key()
    assert result.issued_chain == (pki.ca, pki.root)
    assert result.signer_chain == (pki.ca, pki.root)


@pytest.mark.parametrize("fail_info", [f for f in CMCFailInfo if f != CMCFailInfo.TRY_LATER])
def test_ca_refusal_reaches_the_client_with_its_fail_info(
    pki: PkiFixture, fail_info: CMCFailInfo
) -> None:
    request = client_request(pki)
    status = StatusInfo(CMCStatus.FAILED, (1,), "refused", fail_info=fail_info)
    response = build_full_response(signer=ca_signer(pki), statuses=[status], request=request)
    with pytest.raises(CMCFailure) as caught:
        validate_response(response.der, request=request, trust_anchors=[pki.root], at=NOW)
    assert caught.value.fail_info == fail_info.rfc_name
    assert caught.value.status_string == "refused"
    assert caught.value.permanent
    assert not isinstance(caught.value, TemporaryFailure)


def test_try_later_is_a_temporary_failure(pki: PkiFixture) -> None:
    request = client_request(pki)
    status = StatusInfo(CMCStatus.FAILED, (1,), fail_info=CMCFailInfo.TRY_LATER)
    response = build_full_response(signer=ca_signer(pki), statuses=[status], request=request)
    with pytest.raises(CMCTryLater) as caught:
        validate_response(response.der, request=request, trust_anchors=[pki.root], at=NOW)
    assert isinstance(caught.value, TemporaryFailure) and not caught.value.permanent


def test_pending_request_is_polled_with_query_pending_until_issued(pki: PkiFixture) -> None:
    request = client_request(pki)
    received = server_receives(request.der)
    pend_time = NOW + timedelta(hours=1)
    pending = StatusInfo(
        CMCStatus.PENDING, (1,), "manual approval", pend_info=PendInfo(b"order-42", pend_time)
    )
    first = build_full_response(signer=ca_signer(pki), statuses=[pending], request=received)
    with pytest.raises(CMCPending) as caught:
        validate_response(first.der, request=request, trust_anchors=[pki.root], at=NOW)
    assert caught.value.pend_token == b"order-42"
    assert caught.value.pend_time == pend_time

    poll = build_query_pending(
        caught.value.pend_token,
        signer=Signer(pki.user_rsa),
        transaction_id=request.transaction_id or 0,
    )
    polled = parse_request(poll.der)
    assert isinstance(polled, FullPKIRequest)
    assert polled.transaction_id == request.transaction_id
    assert polled.pki_data.single_value("queryPending") == b"order-42"
    assert polled.sender_nonce != request.sender_nonce
    with pytest.raises(SignerNotFound):  # no CSR in a poll: the server knows the key
        verify_request(polled)
    server_side = verify_signed_data(poll.der, signer_public_key=pki.user_rsa.public_key())
    assert server_side.signer_certificate is None

    issued = pki.issue(pki.user_rsa.public_key(), "alice@example.org")
    done = build_full_response(
        signer=ca_signer(pki),
        statuses=[StatusInfo(CMCStatus.SUCCESS, (1,))],
        request=polled,
        certificates=[issued],
    )
    result = validate_response(
        done.der,
        request=poll,
        trust_anchors=[pki.root],
        our_public_key=pki.user_rsa.public_key(),
        at=NOW,
    )
    assert result.issued == issued


def test_ra_fetches_a_certificate_with_get_cert(pki: PkiFixture) -> None:
    issued = pki.issue(pki.user_rsa.public_key(), "bob@example.org")
    ra = Signer(pki.ra_key, pki.ra, (pki.ca,))
    request = build_get_cert_request(pki.ca.subject, issued.serial_number, signer=ra)
    received = server_receives(request.der)
    (asked,) = received.pki_data.find("getCert")
    assert asked.value == GetCert(pki.ca.subject, issued.serial_number)
    response = build_full_response(
        signer=ca_signer(pki),
        statuses=[StatusInfo(CMCStatus.SUCCESS, (asked.body_part_id,))],
        request=received,
        certificates=[issued],
    )
    result = validate_response(response.der, request=request, trust_anchors=[pki.root], at=NOW)
    assert result.issued == issued


def test_user_revokes_a_lost_key(pki: PkiFixture) -> None:
    revoke = RevokeRequest(
        pki.ca.subject,
        0x1234,
        "key_compromise",
        invalidity_date=NOW,
        passphrase=b"s3cret",
        comment="laptop stolen",
    )
    request = build_revoke_request(revoke, signer=Signer(pki.ra_key, pki.ra, (pki.ca,)))
    received = server_receives(request.der)
    assert received.pki_data.single_value("revokeRequest") == revoke
    bpid = received.pki_data.find("revokeRequest")[0].body_part_id
    response = build_full_response(
        signer=ca_signer(pki), statuses=[StatusInfo(CMCStatus.SUCCESS, (bpid,))], request=received
    )
    result = validate_response(response.der, request=request, trust_anchors=[pki.root], at=NOW)
    assert result.issued is None
    assert result.statuses[0].status == CMCStatus.SUCCESS


def test_server_refuses_unknown_controls_with_bad_request(pki: PkiFixture) -> None:
    from cmc.messages.api import RawValue

    odd = control("1.3.6.1.4.1.99999.1", RawValue(b"\x05\x00"))
    request = build_full_request(
        signer=Signer(pki.user_rsa),
        requests=[make_csr(pki.user_rsa, "a@example.org")],
        controls=[odd],
    )
    received = server_receives(request.der)
    assert [c.oid for c in received.pki_data.unrecognised_controls] == ["1.3.6.1.4.1.99999.1"]
    refused = unsupported_controls(received.pki_data, {"transactionId", "senderNonce"})
    status = refusal_status(refused)
    assert status.status == CMCStatus.FAILED and status.fail_info == CMCFailInfo.BAD_REQUEST
    known = unsupported_controls(
        received.pki_data, {"transactionId", "senderNonce", "1.3.6.1.4.1.99999.1"}
    )
    assert known == ()
    not_implemented = refusal_status(
        [c for c in received.pki_data.controls if c.name == "senderNonce"]
    )
    assert not_implemented.status == CMCStatus.NO_SUPPORT


def test_tampered_response_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    good = success_response(pki, request)
    # flip one byte inside the signed PKIResponse content (the senderNonce's last byte)
    response_nonce = build_nonce_position(good)
    tampered = bytearray(good)
    tampered[response_nonce] ^= 0x01
    with pytest.raises(TamperedContent):
        validate_response(bytes(tampered), request=request, trust_anchors=[pki.root], at=NOW)
    assert issubclass(TamperedContent, SignatureInvalid)


def build_nonce_position(der: bytes) -> int:
    from cmc.messages.responses import parse_response

    nonce = parse_response(der).sender_nonce  # type: ignore[union-attr]
    assert nonce is not None
    return der.index(nonce) + len(nonce) - 1


def test_response_with_foreign_recipient_nonce_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    forged = success_response(pki, request, recipient_nonce=b"\x00" * 16)
    with pytest.raises(NonceMismatch):
        validate_response(forged, request=request, trust_anchors=[pki.root], at=NOW)


def test_response_for_another_transaction_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    other = success_response(pki, request, transaction_id=(request.transaction_id or 0) + 1)
    with pytest.raises(TransactionIdMismatch):
        validate_response(other, request=request, trust_anchors=[pki.root], at=NOW)


def test_response_signed_by_unknown_ca_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    foreign = success_response(pki, request, signer=Signer(pki.stranger_key, pki.stranger))
    with pytest.raises(UntrustedSigner):
        validate_response(foreign, request=request, trust_anchors=[pki.root], at=NOW)


def test_certificate_from_another_issuer_than_configured_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    with pytest.raises(IssuerMismatch, match="names none of them"):
        validate_response(
            success_response(pki, request),
            request=request,
            trust_anchors=[pki.root],
            issuer_dn=pki.stranger.subject,
            at=NOW,
        )


def test_issuer_dn_naming_the_root_above_the_issuing_ca_is_accepted(pki: PkiFixture) -> None:
    """Totemo's issuerDN as SwissSign's guide sets it: the root DN, not the direct issuer."""
    request = client_request(pki)
    written = x509.Name.from_rfc4514_string(pki.root.subject.rfc4514_string().upper())
    validated = validate_response(
        success_response(pki, request),
        request=request,
        trust_anchors=[pki.root],
        issuer_dn=written,  # as an administrator typed it: case differs
        at=NOW,
    )
    assert validated.issued is not None and validated.issued.issuer != pki.root.subject


def test_certificate_for_someone_elses_key_is_rejected(pki: PkiFixture) -> None:
    request = client_request(pki)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyMismatch):
        validate_response(
            success_response(pki, request),
            request=request,
            trust_anchors=[pki.root],
            our_public_key=other_key.public_key(),
            at=NOW,
        )


def test_expired_ca_is_reported_as_such(pki: PkiFixture) -> None:
    from cmc.errors import CertificateNotValidAt

    request = client_request(pki)
    with pytest.raises(CertificateNotValidAt):
        validate_response(
            success_response(pki, request),
            request=request,
            trust_anchors=[pki.root],
            at=NOW + timedelta(days=400),
        )


def test_issued_name_is_a_cryptography_name(pki: PkiFixture) -> None:
    assert isinstance(pki.ca.subject, x509.Name)
