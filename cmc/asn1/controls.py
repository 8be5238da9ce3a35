"""CMC control attributes (RFC 5272 §6, RFC 6402 §2): ASN.1 <-> :mod:`cmc.asn1.values`.

A :class:`Control` is one TaggedAttribute: its body part ID, OID and decoded values.
Known controls decode to the value types of :mod:`cmc.asn1.values` (int, bytes, str or a
dataclass); controls with an unknown OID are preserved as :class:`RawValue` so a server
can answer them as RFC 5272 §3.2.1.2.1 requires (see
:func:`cmc.messages.request_checks.unsupported_controls`) and a relay can pass them on unchanged.
"""

from __future__ import annotations

from typing import Any

from asn1crypto import core, crl
from asn1crypto import x509 as asn1_x509

from cmc.asn1 import types as asn1
from cmc.asn1.der import (
    AlgorithmId,
    decoding,
    directory_name,
    integer,
    name_from_asn1,
    name_to_asn1,
    reencode,
    to_utc,
)
from cmc.asn1.values import (
    AddExtensions,
    BodyPartRef,
    CertId,
    ChangeSubjectName,
    CMCFailInfo,
    CMCStatus,
    Control,
    DecryptedPOP,
    ExtendedFailInfo,
    GetCert,
    GetCRL,
    IdentityProofV2,
    LraPopWitness,
    ModCertTemplate,
    PendInfo,
    PopLinkWitnessV2,
    RawExtension,
    RawValue,
    RevokeRequest,
    StatusInfo,
)
from cmc.errors import MalformedMessage

# --- decoding ---------------------------------------------------------------------------


def _refs(values: Any) -> tuple[BodyPartRef, ...]:
    out: list[BodyPartRef] = []
    for ref in values:
        if ref.name == "body_part_id":
            out.append(integer(ref.chosen))
        else:
            out.append(tuple(integer(item) for item in ref.chosen))
    return tuple(out)


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(integer(item) for item in values)


def _opt(value: Any) -> Any:
    return None if isinstance(value, core.Void) else value.native


def _status_v2(value: Any) -> StatusInfo:
    return _status(value, 2, _refs(value["body_list"]))


def _status_v1(value: Any) -> StatusInfo:
    return _status(value, 1, _ints(value["body_list"]))


def _status(value: Any, version: int, body_list: tuple[BodyPartRef, ...]) -> StatusInfo:
    code = integer(value["cmc_status"])
    try:
        status = CMCStatus(code)
    except ValueError:
        raise MalformedMessage(f"unknown CMCStatus {code}") from None
    fail_info: CMCFailInfo | int | None = None
    pend_info = extended = None
    other = value["other_info"]
    if not isinstance(other, core.Void):
        if other.name == "fail_info":
            raw = integer(other.chosen)
            fail_info = CMCFailInfo(raw) if raw in CMCFailInfo._value2member_map_ else raw
        elif other.name == "extended_fail_info" or other.chosen.contents[:1] == b"\x06":
            # RFC 6402 [1]-tagged form, or RFC 5272's untagged SEQUENCE { OID, ANY }.
            ext = asn1.ExtendedFailInfo.load(b"\x30" + reencode(other.chosen)[1:])
            extended = ExtendedFailInfo(
                ext["fail_info_oid"].dotted, reencode(ext["fail_info_value"])
            )
        else:
            pend = other.chosen
            pend_info = PendInfo(bytes(pend["pend_token"].native), to_utc(pend["pend_time"].native))
    return StatusInfo(
        status, body_list, _opt(value["status_string"]), fail_info, pend_info, extended, version
    )


def _alg(value: Any) -> AlgorithmId:
    return AlgorithmId.from_asn1(value)


def _revoke(value: Any) -> RevokeRequest:
    date = _opt(value["invalidity_date"])
    return RevokeRequest(
        name_from_asn1(value["issuer_name"]),
        integer(value["serial_number"]),
        value["reason"].native,
        to_utc(date) if date is not None else None,
        _opt(value["passphrase"]),
        _opt(value["comment"]),
    )


def _get_crl(value: Any) -> GetCRL:
    time = _opt(value["time"])
    reasons = _opt(value["reasons"])
    return GetCRL(
        name_from_asn1(value["issuer_name"]),
        None if isinstance(value["crl_name"], core.Void) else reencode(value["crl_name"]),
        to_utc(time) if time is not None else None,
        frozenset(reasons) if reasons is not None else None,
    )


def _add_extensions(value: Any) -> AddExtensions:
    return AddExtensions(
        integer(value["pki_data_reference"]),
        _ints(value["cert_references"]),
        tuple(
            RawExtension(
                ext["extn_id"].dotted, bool(ext["critical"].native), ext["extn_value"].contents
            )
            for ext in value["extensions"]
        ),
    )


def _change_subject(value: Any) -> ChangeSubjectName:
    subject = value["subject"]
    alt = value["subject_alt"]
    return ChangeSubjectName(
        None if isinstance(subject, core.Void) else name_from_asn1(subject),
        None if isinstance(alt, core.Void) else reencode(alt),
    )


_DECODERS: dict[str, Any] = {
    "statusInfo": _status_v1,
    "statusInfoV2": _status_v2,
    "identification": lambda v: v.native,
    "identityProof": lambda v: bytes(v.native),
    "identityProofV2": lambda v: IdentityProofV2(
        _alg(v["proof_alg_id"]), _alg(v["mac_alg_id"]), v["witness"].native
    ),
    "transactionId": integer,
    "addExtensions": _add_extensions,
    "decryptedPOP": lambda v: DecryptedPOP(
        integer(v["body_part_id"]), _alg(v["the_pop_alg_id"]), v["the_pop"].native
    ),
    "lraPOPWitness": lambda v: LraPopWitness(integer(v["pki_data_body_id"]), _ints(v["body_ids"])),
    "getCert": lambda v: GetCert(directory_name(v["issuer_name"]), integer(v["serial_number"])),
    "getCRL": _get_crl,
    "revokeRequest": _revoke,
    "popLinkWitnessV2": lambda v: PopLinkWitnessV2(
        _alg(v["key_gen_algorithm"]), _alg(v["mac_algorithm"]), v["witness"].native
    ),
    "confirmCertAcceptance": lambda v: CertId(
        name_from_asn1(v["issuer"]), integer(v["serial_number"])
    ),
    "authData": integer,
    "batchRequests": _ints,
    "batchResponses": _ints,
    "modCertTemplate": lambda v: ModCertTemplate(
        _ints(v["pki_data_reference"]),
        _ints(v["cert_references"]),
        reencode(v["cert_template"]),
        bool(v["replace"].native),
    ),
    "controlProcessed": lambda v: _refs(v["body_list"]),
    "raIdentityWitness": _ints,
    "changeSubjectName": _change_subject,
    "responseBody": _ints,
}
for _name in ("dataReturn", "senderNonce", "recipientNonce", "regInfo", "responseInfo"):
    _DECODERS[_name] = lambda v: bytes(v.native)
for _name in ("queryPending", "popLinkRandom", "popLinkWitness"):
    _DECODERS[_name] = lambda v: bytes(v.native)


def control_from_asn1(attribute: Any) -> Control:
    """Decode one asn1 TaggedAttribute; unknown OIDs keep :class:`RawValue` values."""
    with decoding("control attribute"):
        oid = attribute["attr_type"].dotted
        body_part_id = integer(attribute["body_part_id"])
        name = asn1.CONTROL_NAMES.get(oid)
        decoder = _DECODERS.get(name or "")
        values: tuple[Any, ...]
        if decoder is None:
            values = tuple(RawValue(reencode(v)) for v in attribute["attr_values"])
        else:
            values = tuple(decoder(v) for v in attribute["attr_values"])
        return Control(oid, values, body_part_id, raw=reencode(attribute))


# --- encoding ---------------------------------------------------------------------------


def _ref_asn1(ref: BodyPartRef) -> asn1.BodyPartReference:
    if isinstance(ref, int):
        return asn1.BodyPartReference(name="body_part_id", value=ref)
    return asn1.BodyPartReference(name="body_part_path", value=list(ref))


def _status_asn1(info: StatusInfo) -> Any:
    if info.extended_fail_info is not None:
        raise ValueError("cmcgate never emits extendedFailInfo (RFC 6402 interop)")
    fields: dict[str, Any] = {"cmc_status": int(info.status)}
    if info.version == 2:
        fields["body_list"] = [_ref_asn1(ref) for ref in info.body_list]
        spec: Any = asn1.CMCStatusInfoV2
        other: Any = asn1.OtherStatusInfoV2
    else:
        if not all(isinstance(ref, int) for ref in info.body_list):
            raise ValueError("statusInfo (v1) can only list body part IDs")
        fields["body_list"] = list(info.body_list)
        spec, other = asn1.CMCStatusInfo, asn1.OtherStatusInfo
    if info.status_string is not None:
        fields["status_string"] = info.status_string
    if info.fail_info is not None:
        fields["other_info"] = other(name="fail_info", value=int(info.fail_info))
    elif info.pend_info is not None:
        pend = {"pend_token": info.pend_info.pend_token, "pend_time": info.pend_info.pend_time}
        fields["other_info"] = other(name="pend_info", value=pend)
    return spec(fields)


def _without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def crl_reason_name(reason: str) -> str:
    """asn1crypto's name for a CRLReason given as RFC 5280 (``keyCompromise``) or asn1crypto
    (``key_compromise``) spelling; unknown names raise MalformedMessage."""
    snake = "".join("_" + c.lower() if c.isupper() else c for c in reason.strip()).lstrip("_")
    for spelled, native in (("c_a_", "ca_"), ("a_a_", "aa_"), ("c_r_l", "crl")):
        snake = snake.replace(spelled, native)
    if snake not in set(crl.CRLReason._map.values()):
        raise MalformedMessage(f"unknown CRL reason {reason!r}")
    return snake


def _revoke_asn1(value: RevokeRequest) -> Any:
    return asn1.RevokeRequest(
        _without_none(
            issuer_name=name_to_asn1(value.issuer),
            serial_number=value.serial_number,
            reason=crl.CRLReason(crl_reason_name(value.reason)),
            invalidity_date=value.invalidity_date,
            passphrase=value.passphrase,
            comment=value.comment,
        )
    )


def _get_crl_asn1(value: GetCRL) -> Any:
    return asn1.GetCRL(
        _without_none(
            issuer_name=name_to_asn1(value.issuer),
            crl_name=core.Any.load(value.crl_name_der) if value.crl_name_der else None,
            time=value.time,
            reasons=set(value.reasons) if value.reasons is not None else None,
        )
    )


def _get_cert_asn1(value: GetCert) -> Any:
    issuer = asn1_x509.GeneralName(name="directory_name", value=name_to_asn1(value.issuer))
    return asn1.GetCert({"issuer_name": issuer, "serial_number": value.serial_number})


_ENCODERS: dict[str, Any] = {
    "statusInfo": _status_asn1,
    "statusInfoV2": _status_asn1,
    "getCert": _get_cert_asn1,
    "getCRL": _get_crl_asn1,
    "revokeRequest": _revoke_asn1,
    "batchRequests": lambda v: asn1.BodyPartList(list(v)),
    "batchResponses": lambda v: asn1.BodyPartList(list(v)),
    "controlProcessed": lambda v: asn1.ControlsProcessed(
        {"body_list": [_ref_asn1(ref) for ref in v]}
    ),
    "lraPOPWitness": lambda v: asn1.LraPopWitness(
        {"pki_data_body_id": v.pki_data_body_id, "body_ids": list(v.body_ids)}
    ),
    "identityProofV2": lambda v: asn1.IdentityProofV2(
        {
            "proof_alg_id": v.proof_algorithm.to_asn1(),
            "mac_alg_id": v.mac_algorithm.to_asn1(),
            "witness": v.witness,
        }
    ),
    "popLinkWitnessV2": lambda v: asn1.PopLinkWitnessV2(
        {
            "key_gen_algorithm": v.key_gen_algorithm.to_asn1(),
            "mac_algorithm": v.mac_algorithm.to_asn1(),
            "witness": v.witness,
        }
    ),
    "addExtensions": lambda v: asn1.AddExtensions(
        {
            "pki_data_reference": v.pki_data_reference,
            "cert_references": list(v.cert_references),
            "extensions": [
                {"extn_id": e.oid, "critical": e.critical, "extn_value": core.Any.load(e.value)}
                for e in v.extensions
            ],
        }
    ),
}


def _encode_value(name: str | None, value: Any) -> Any:
    if isinstance(value, RawValue):
        return core.Any.load(value.der)
    encoder = _ENCODERS.get(name or "")
    if encoder is not None:
        return encoder(value)
    spec = asn1.CONTROL_VALUE_SPECS.get(asn1.CONTROL_OIDS.get(name or "", ""))
    if spec in (core.Integer, core.OctetString, core.UTF8String):
        return spec(value)
    raise ValueError(f"cannot encode a {type(value).__name__} for control {name}")


def control_to_asn1(item: Control) -> asn1.TaggedAttribute:
    """The TaggedAttribute for ``item``; raises ValueError/TypeError on bad builder input."""
    if item.body_part_id <= 0:
        raise ValueError(f"control {item.name} has no body part ID")
    name = asn1.CONTROL_NAMES.get(item.oid)
    values = [_encode_value(name, value) for value in item.values]
    generic = asn1.RawTaggedAttribute(
        {
            "body_part_id": item.body_part_id,
            "attr_type": item.oid,
            "attr_values": [core.Any.load(reencode(v)) for v in values],
        }
    )
    return asn1.TaggedAttribute.load(generic.dump())
