"""Server-side checks of a Full PKI Request: its signature (RFC 5272 §3.2.1.3.1, POP by
self-signature) and controls the server cannot honour (RFC 5272 §3.2.1.2.1, §6.1.1).

Unrecognised controls cannot be ignored: :func:`unsupported_controls` lists them and
:func:`refusal_status` gives the answer: ``failed``/``badRequest`` for unknown controls,
``noSupport`` for controls known but not implemented by that server.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from cmc.asn1 import types as asn1
from cmc.asn1.der import DECODE_ERRORS, usable_public_key
from cmc.asn1.values import CMCFailInfo, CMCStatus, Control, StatusInfo
from cmc.errors import SignerNotFound
from cmc.messages.cms import VerifiedSignedData, verify_signed_data
from cmc.messages.requests import CertificationRequest, CRMFRequest, FullPKIRequest, PKIData


def requested_public_keys(pki_data: PKIData) -> list[PublicKeyTypes]:
    """Public keys of the tcr and crm requests, in order."""
    keys: list[PublicKeyTypes] = []
    for item in pki_data.requests:
        key = None
        if isinstance(item, CertificationRequest):
            key = usable_public_key(item.csr)
        elif isinstance(item, CRMFRequest) and item.public_key_der is not None:
            try:
                key = serialization.load_der_public_key(item.public_key_der)
            except DECODE_ERRORS:
                key = None
        if key is not None:
            keys.append(key)
    return keys


def verify_request(request: FullPKIRequest) -> VerifiedSignedData:
    """Verify a Full PKI Request's signature (RFC 5272 §3.2.1.3.1 POP by self-signature).

    A signer identified by subjectKeyIdentifier without a certificate is looked up among the
    requested keys (SKI method 1, then the only requested key).  Trust in a certificate
    signer (RA, access certificate) is the caller's: :func:`cmc.messages.cms.verify_chain`.
    """
    sid = request.signer_id
    if sid.kind == "issuerAndSerialNumber" or request.certificates:
        try:
            return verify_signed_data(request.der)
        except SignerNotFound:
            if sid.kind == "issuerAndSerialNumber":
                raise
    keys = requested_public_keys(request.pki_data)
    for key in keys:
        if x509.SubjectKeyIdentifier.from_public_key(key).digest == sid.key_identifier:  # type: ignore[arg-type]
            return verify_signed_data(request.der, signer_public_key=key)
    if len(keys) == 1:
        return verify_signed_data(request.der, signer_public_key=keys[0])
    raise SignerNotFound("request signer is neither a certificate nor a requested key")


def unsupported_controls(pki_data: PKIData, supported: Collection[str]) -> tuple[Control, ...]:
    """Controls a server handling only ``supported`` (RFC names) must refuse."""
    allowed = {asn1.CONTROL_OIDS.get(name, name) for name in supported}
    return tuple(item for item in pki_data.controls if item.oid not in allowed)


def refusal_status(refused: Sequence[Control]) -> StatusInfo:
    """The statusInfoV2 a server answers for refused controls (RFC 5272 §6.1.1)."""
    unknown = [c for c in refused if not c.recognised]
    names = ", ".join(c.name for c in refused)
    body_list = tuple(c.body_part_id for c in refused)
    if unknown:
        return StatusInfo(
            CMCStatus.FAILED,
            body_list,
            f"unrecognised control(s): {names}",
            fail_info=CMCFailInfo.BAD_REQUEST,
        )
    return StatusInfo(CMCStatus.NO_SUPPORT, body_list, f"not supported: {names}")
