"""Human- and JSON-readable dumps of CMC messages (``cmcgate cmc inspect``), like
``openssl req -text`` for RFC 5272: controls, requests, statuses and certificates.

Auto-detects PKCS#10, PKIData, PKIResponse and certs-only SignedData, in DER, PEM or bare
base64.  Pure: bytes in, text or a JSON-ready dict out.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cmc.asn1 import types as asn1
from cmc.asn1.der import decoding, usable_public_key
from cmc.asn1.values import Control, RawValue, StatusInfo
from cmc.errors import MalformedMessage
from cmc.messages.cms import load_signed_data
from cmc.messages.requests import (
    CertificationRequest,
    CRMFRequest,
    FullPKIRequest,
    OtherRequest,
    SimplePKIRequest,
    parse_request,
)
from cmc.messages.responses import FullPKIResponse, SimplePKIResponse, parse_response

Message = SimplePKIRequest | FullPKIRequest | FullPKIResponse | SimplePKIResponse

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.S)


@dataclass(frozen=True)
class Inspection:
    """What a file holds: its encoding, kind and the parsed message."""

    encoding: str
    kind: str
    message: Message


def decode_input(data: bytes) -> tuple[bytes, str]:
    """DER bytes and the encoding they came in (``DER``, ``PEM`` or ``base64``)."""
    match = _PEM.search(data)
    if match:
        try:
            return base64.b64decode(match.group(2), validate=False), "PEM"
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessage(f"PEM block {match.group(1).decode()} is not base64") from exc
    if data[:1] == b"\x30":
        return data, "DER"
    compact = b"".join(data.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("neither DER, PEM nor base64") from None
    if not decoded:
        raise MalformedMessage("empty input")
    return decoded, "base64"


def inspect_bytes(data: bytes) -> Inspection:
    """Parse whatever CMC message ``data`` holds; raises :class:`MalformedMessage`."""
    der, encoding = decode_input(bytes(data))
    try:
        signed_data = load_signed_data(der)
    except MalformedMessage:
        message: Message = parse_request(der)
    else:
        with decoding("SignedData"):
            content_type = signed_data["encap_content_info"]["content_type"].dotted
        message = parse_request(der) if content_type == asn1.ID_CCT_PKIDATA else parse_response(der)
    kinds = {
        SimplePKIRequest: "Simple PKI Request (PKCS#10)",
        FullPKIRequest: "Full PKI Request",
        FullPKIResponse: "Full PKI Response",
        SimplePKIResponse: "Simple PKI Response (certs-only)",
    }
    return Inspection(encoding, kinds[type(message)], message)


# --- rendering --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready rendering of a parsed value."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return getattr(value, "rfc_name", value.name)
    if isinstance(value, x509.Name):
        return value.rfc4514_string()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, RawValue):
        return {"der": value.der.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None and f.name != "raw"
        }
    if isinstance(value, tuple | list | frozenset):
        return [_plain(item) for item in value]
    return value


def _csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool | None:
    try:
        return bool(csr.is_signature_valid)
    except (UnsupportedAlgorithm, ValueError):
        return None


def _key_text(key: Any) -> str:
    if key is None:
        return "unsupported or invalid key"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.replace("PublicKey", "").lstrip("_")


def _emails(extensions: x509.Extensions) -> list[str]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [str(name) for name in san.get_values_for_type(x509.RFC822Name)]


def _csr_dict(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    try:
        extensions = csr.extensions
    except ValueError:
        extensions = x509.Extensions([])
    return {
        "subject": csr.subject.rfc4514_string(),
        "publicKey": _key_text(usable_public_key(csr)),
        "emails": _emails(extensions),
        "signatureValid": _csr_signature_valid(csr),
    }


def _cert_dict(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "notBefore": cert.not_valid_before_utc.isoformat(),
        "notAfter": cert.not_valid_after_utc.isoformat(),
        "publicKey": _key_text(usable_public_key(cert)),
        "emails": _emails(cert.extensions),
    }


def _control_dict(item: Control) -> dict[str, Any]:
    values = [_plain(value) for value in item.values]
    return {
        "bodyPartID": item.body_part_id,
        "type": item.name,
        "oid": item.oid,
        "recognised": item.recognised,
        "values": values,
    }


def _request_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, CertificationRequest):
        return {"bodyPartID": item.body_part_id, "type": "tcr", **_csr_dict(item.csr)}
    if isinstance(item, CRMFRequest):
        subject = item.subject.rfc4514_string() if item.subject is not None else None
        return {"bodyPartID": item.body_part_id, "type": "crm", "subject": subject}
    assert isinstance(item, OtherRequest)
    return {"bodyPartID": item.body_part_id, "type": "orm", "messageType": item.message_type}


def to_dict(inspection: Inspection) -> dict[str, Any]:
    """JSON-ready description of an inspected message."""
    message = inspection.message
    out: dict[str, Any] = {"encoding": inspection.encoding, "kind": inspection.kind}
    if isinstance(message, SimplePKIRequest):
        out["request"] = _csr_dict(message.csr)
        return out
    if isinstance(message, FullPKIRequest | FullPKIResponse):
        sid = message.signer_id
        out["signer"] = _plain(sid)
        if sid.serial_number is not None:
            out["signer"]["serial_number"] = f"{sid.serial_number:x}"
        body = message.pki_data if isinstance(message, FullPKIRequest) else message.pki_response
        out["controls"] = [_control_dict(item) for item in body.controls]
        if isinstance(message, FullPKIRequest):
            out["requests"] = [_request_dict(item) for item in message.pki_data.requests]
        out["cmsSequence"] = [_plain(item) for item in body.cms_sequence]
        out["otherMsgSequence"] = [_plain(item) for item in body.other_msgs]
    out["certificates"] = [_cert_dict(cert) for cert in message_certificates(message)]
    return out


def message_certificates(message: Message) -> tuple[x509.Certificate, ...]:
    if isinstance(message, SimplePKIRequest):
        return ()
    return message.certificates


def _status_text(status: StatusInfo) -> str:
    parts = [f"status={status.status.rfc_name}", f"bodyList={_plain(list(status.body_list))}"]
    if status.fail_info is not None:
        parts.append(f"failInfo={status.fail_info_name}")
    if status.pend_info is not None:
        token = status.pend_info.pend_token.hex()
        parts.append(f"pendToken={token} pendTime={status.pend_info.pend_time.isoformat()}")
    if status.extended_fail_info is not None:
        parts.append(f"extendedFailInfo={status.extended_fail_info.oid}")
    if status.status_string:
        parts.append(f"statusString={status.status_string!r}")
    return " ".join(parts)


def _value_text(value: Any) -> str:
    if isinstance(value, StatusInfo):
        return _status_text(value)
    plain = _plain(value)
    return plain if isinstance(plain, str) else json.dumps(plain, sort_keys=True)


def to_text(inspection: Inspection) -> str:
    """Line-oriented description (``key=value``), one item per line."""
    described = to_dict(inspection)
    lines = [f"encoding={inspection.encoding}", f"kind={inspection.kind}"]
    message = inspection.message
    if "signer" in described:
        lines.append("signer " + " ".join(f"{k}={v}" for k, v in described["signer"].items()))
    if isinstance(message, FullPKIRequest | FullPKIResponse):
        body = message.pki_data if isinstance(message, FullPKIRequest) else message.pki_response
        for item in body.controls:
            values = "; ".join(_value_text(value) for value in item.values)
            lines.append(
                f"control bodyPartID={item.body_part_id} {item.name} ({item.oid}): {values}"
            )
    for request in described.get("requests", []):
        lines.append("request " + " ".join(f"{k}={v}" for k, v in request.items()))
    if "request" in described:
        lines.append("request " + " ".join(f"{k}={v}" for k, v in described["request"].items()))
    for cert in described.get("certificates", []):
        lines.append("certificate " + " ".join(f'{k}="{v}"' for k, v in cert.items()))
    return "\n".join(lines)
