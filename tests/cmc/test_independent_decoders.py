"""Everything the library writes decodes, field by field, with pyasn1-alt-modules' own
RFC 5652 / RFC 6402 modules (an independent ASN.1 implementation), and OpenSSL verifies
our signatures."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc5652, rfc6402

from cmc.messages.api import (
    CMCFailInfo,
    CMCStatus,
    PendInfo,
    RevokeRequest,
    Signer,
    StatusInfo,
    build_full_request,
    build_full_response,
    build_revoke_request,
    build_simple_response,
    control,
)
from tests.cmc.conftest import NOW, PkiFixture, make_cert, make_csr

ID_CCT_PKIDATA = rfc6402.id_cct_PKIData
ID_CCT_PKIRESPONSE = rfc6402.id_cct_PKIResponse


def decode_signed_data(der: bytes) -> rfc5652.SignedData:
    info, rest = decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    assert rest == b""
    assert info["contentType"] == rfc5652.id_signedData
    signed, rest = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
    assert rest == b""
    return signed


def control_values(sequence: Any) -> dict[str, list[Any]]:
    """attrType dotted -> decoded values, using rfc6402's own control map."""
    out: dict[str, list[Any]] = {}
    for attribute in sequence:
        oid = attribute["attrType"]
        spec = rfc6402.cmcControlAttributesMap[oid]
        for raw in attribute["attrValues"]:
            value, rest = decoder.decode(raw, asn1Spec=spec)
            assert rest == b""
            out.setdefault(str(oid), []).append(value)
    return out


def test_full_request_decodes_with_pyasn1_field_by_field(pki: PkiFixture) -> None:
    csr = make_csr(pki.user_ec, "carol@example.org")
    request = build_full_request(
        signer=Signer(pki.user_ec),
        requests=[csr],
        controls=[control("identification", "carol"), control("regInfo", b"extra")],
        transaction_id=77,
        sender_nonce=b"n" * 16,
        signing_time=NOW,
    )
    signed = decode_signed_data(request.der)
    assert int(signed["version"]) == 3
    assert [str(a["algorithm"]) for a in signed["digestAlgorithms"]] == ["2.16.840.1.101.3.4.2.1"]
    assert not signed["digestAlgorithms"][0]["parameters"].isValue  # RFC 5754: absent
    assert signed["encapContentInfo"]["eContentType"] == ID_CCT_PKIDATA
    pki_data, rest = decoder.decode(
        signed["encapContentInfo"]["eContent"], asn1Spec=rfc6402.PKIData()
    )
    assert rest == b""
    (tagged,) = pki_data["reqSequence"]
    tcr = tagged["tcr"]
    assert int(tcr["bodyPartID"]) == 1
    csr_algorithm = tcr["certificationRequest"]["signatureAlgorithm"]["algorithm"]
    assert str(csr_algorithm) == "1.2.840.10045.4.3.2"
    ids = [int(a["bodyPartID"]) for a in pki_data["controlSequence"]]
    assert ids == [2, 3, 4, 5]
    values = control_values(pki_data["controlSequence"])
    assert int(values[str(rfc6402.id_cmc_transactionId)][0]) == 77
    assert bytes(values[str(rfc6402.id_cmc_senderNonce)][0]) == b"n" * 16
    assert str(values[str(rfc6402.id_cmc_identification)][0]) == "carol"
    assert bytes(values[str(rfc6402.id_cmc_regInfo)][0]) == b"extra"
    assert len(pki_data["cmsSequence"]) == 0 and len(pki_data["otherMsgSequence"]) == 0

    (signer_info,) = signed["signerInfos"]
    assert int(signer_info["version"]) == 3
    ski = x509.SubjectKeyIdentifier.from_public_key(pki.user_ec.public_key()).digest
    assert bytes(signer_info["sid"]["subjectKeyIdentifier"]) == ski
    assert str(signer_info["signatureAlgorithm"]["algorithm"]) == "1.2.840.10045.4.3.2"
    attr_types = sorted(str(a["attrType"]) for a in signer_info["signedAttrs"])
    assert attr_types == sorted(
        [
            "1.2.840.113549.1.9.3",
            "1.2.840.113549.1.9.4",
            "1.2.840.113549.1.9.5",
            "1.2.840.113549.1.9.52",
        ]
    )


def test_full_response_decodes_with_pyasn1_field_by_field(pki: PkiFixture) -> None:
    issued = pki.issue(pki.user_rsa.public_key(), "alice@example.org")
    statuses = [
        StatusInfo(CMCStatus.SUCCESS, (1,)),
        StatusInfo(CMCStatus.FAILED, (2, (3, 4)), "nope", fail_info=CMCFailInfo.BAD_IDENTITY),
        StatusInfo(CMCStatus.PENDING, (5,), pend_info=PendInfo(b"tok", NOW + timedelta(hours=2))),
    ]
    response = build_full_response(
        signer=Signer(pki.ca_key, pki.ca, (pki.root,), rsa_pss=True),
        statuses=statuses,
        transaction_id=9,
        recipient_nonce=b"r" * 16,
        sender_nonce=b"s" * 16,
        certificates=[issued],
        controls=[control("batchResponses", (1, 2)), control("controlProcessed", (1, (2, 3)))],
    )
    signed = decode_signed_data(response.der)
    assert signed["encapContentInfo"]["eContentType"] == ID_CCT_PKIRESPONSE
    carried = {
        int(c["certificate"]["tbsCertificate"]["serialNumber"]) for c in signed["certificates"]
    }
    assert carried == {pki.ca.serial_number, pki.root.serial_number, issued.serial_number}
    body, rest = decoder.decode(
        signed["encapContentInfo"]["eContent"], asn1Spec=rfc6402.PKIResponse()
    )
    assert rest == b""
    values = control_values(body["controlSequence"])
    status_v2 = values[str(rfc6402.id_cmc_statusInfoV2)]
    assert [int(s["cMCStatus"]) for s in status_v2] == [0, 2, 3]
    failed = status_v2[1]
    assert int(failed["otherInfo"]["failInfo"]) == 7
    assert str(failed["statusString"]) == "nope"
    assert int(failed["bodyList"][0]["bodyPartID"]) == 2
    assert [int(i) for i in failed["bodyList"][1]["bodyPartPath"]] == [3, 4]
    pend = status_v2[2]["otherInfo"]["pendInfo"]
    assert bytes(pend["pendToken"]) == b"tok"
    assert pend["pendTime"].asDateTime == NOW + timedelta(hours=2)
    assert int(values[str(rfc6402.id_cmc_transactionId)][0]) == 9
    assert bytes(values[str(rfc6402.id_cmc_recipientNonce)][0]) == b"r" * 16
    assert bytes(values[str(rfc6402.id_cmc_senderNonce)][0]) == b"s" * 16
    assert [int(i) for i in values[str(rfc6402.id_cmc_batchResponses)][0]] == [1, 2]
    processed = values[str(rfc6402.id_cmc_controlProcessed)][0]["bodyList"]
    assert int(processed[0]["bodyPartID"]) == 1
    (signer_info,) = signed["signerInfos"]
    assert int(signer_info["version"]) == 1
    assert int(signer_info["sid"]["issuerAndSerialNumber"]["serialNumber"]) == pki.ca.serial_number
    assert str(signer_info["signatureAlgorithm"]["algorithm"]) == "1.2.840.113549.1.1.10"


def test_revoke_request_decodes_with_pyasn1(pki: PkiFixture) -> None:
    revoke = RevokeRequest(pki.ca.subject, 4660, "superseded", NOW, b"pw", "rotated")
    request = build_revoke_request(revoke, signer=Signer(pki.ra_key, pki.ra, (pki.ca,)))
    signed = decode_signed_data(request.der)
    body, _ = decoder.decode(signed["encapContentInfo"]["eContent"], asn1Spec=rfc6402.PKIData())
    (value,) = control_values(body["controlSequence"])[str(rfc6402.id_cmc_revokeRequest)]
    assert int(value["serialNumber"]) == 4660
    assert int(value["reason"]) == 4
    assert value["invalidityDate"].asDateTime == NOW
    assert bytes(value["passphrase"]) == b"pw" and str(value["comment"]) == "rotated"


def test_simple_response_is_certs_only_for_pyasn1(pki: PkiFixture) -> None:
    signed = decode_signed_data(build_simple_response([pki.ca, pki.root]).der)
    assert len(signed["signerInfos"]) == 0
    assert len(signed["certificates"]) == 2
    assert str(signed["encapContentInfo"]["eContentType"]) == "1.2.840.113549.1.7.1"


def _openssl_verify(der: bytes, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    message = tmp_path / "msg.der"
    message.write_bytes(der)
    return subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-binary",
            "-in",
            str(message),
            "-out",
            str(tmp_path / "content"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("pss", [False, True])
def test_openssl_accepts_self_signed_full_request(
    pki: PkiFixture, tmp_path: Path, pss: bool
) -> None:
    csr = make_csr(pki.user_rsa, "alice@example.org")
    request = build_full_request(signer=Signer(pki.user_rsa, rsa_pss=pss), requests=[csr])
    # OpenSSL finds an SKI signer only among certificates: hand it one for the CSR key.
    holder = make_cert(csr.subject, pki.user_rsa.public_key(), csr.subject, pki.user_rsa, ca=False)
    (tmp_path / "holder.pem").write_bytes(holder.public_bytes(serialization.Encoding.PEM))
    result = _openssl_verify(
        request.der, tmp_path, "-noverify", "-certfile", str(tmp_path / "holder.pem")
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "content").read_bytes() == request.pki_data.der


def test_openssl_verifies_ra_signed_request_against_its_chain(
    pki: PkiFixture, tmp_path: Path
) -> None:
    csr = make_csr(pki.user_ec, "carol@example.org")
    request = build_full_request(signer=Signer(pki.ra_key, pki.ra, (pki.ca,)), requests=[csr])
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    result = _openssl_verify(
        request.der,
        tmp_path,
        "-CAfile",
        str(tmp_path / "root.pem"),
        "-purpose",
        "any",
        "-attime",
        str(int(NOW.timestamp())),
    )
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr


def test_openssl_accepts_our_ecdsa_sha384_response(pki: PkiFixture, tmp_path: Path) -> None:
    response = build_full_response(
        signer=Signer(pki.ra_key, pki.ra, (pki.ca,), hash_algorithm=hashes.SHA384()),
        statuses=[StatusInfo(CMCStatus.SUCCESS, (1,))],
    )
    result = _openssl_verify(response.der, tmp_path, "-noverify")
    assert result.returncode == 0, result.stderr
