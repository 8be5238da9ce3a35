"""ASN.1 types of CMC (RFC 5272 §3-§6 as updated by RFC 6402 §2), built on asn1crypto.

This is the one "hazmat" module of the package: everything else handles the frozen
dataclasses of :mod:`cmc.asn1.controls`, :mod:`cmc.messages.requests` and
:mod:`cmc.messages.responses`.  Nothing
here mutates asn1crypto's global OID tables, so the gateway's own CMS use is unaffected;
PKIData and PKIResponse are loaded explicitly from the eContent octets.

CRMF (RFC 4211 §5) lives in :mod:`cmc.asn1.crmf`.
"""

from __future__ import annotations

from typing import Any as _TypingAny

from asn1crypto import algos, core, crl, csr, x509
from asn1crypto import cms as asn1_cms

from cmc.asn1.crmf import CertReqMsg, CertTemplate

#: RFC 5272 §3.2 / §3.3: eContentType of the Full PKI Request and Response.
ID_CCT_PKIDATA = "1.3.6.1.5.5.7.12.2"
ID_CCT_PKIRESPONSE = "1.3.6.1.5.5.7.12.3"
ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
#: RFC 6402 §2.10 / RFC 5272 §9: extended key usages of CMC CAs and RAs.
ID_KP_CMC_CA = "1.3.6.1.5.5.7.3.27"
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"

_ID_CMC = "1.3.6.1.5.5.7.7."

#: Control attribute names (RFC 5272 §6, RFC 6402 §2) by OID.
CONTROL_NAMES: dict[str, str] = {
    _ID_CMC + "1": "statusInfo",
    _ID_CMC + "2": "identification",
    _ID_CMC + "3": "identityProof",
    _ID_CMC + "4": "dataReturn",
    _ID_CMC + "5": "transactionId",
    _ID_CMC + "6": "senderNonce",
    _ID_CMC + "7": "recipientNonce",
    _ID_CMC + "8": "addExtensions",
    _ID_CMC + "9": "encryptedPOP",
    _ID_CMC + "10": "decryptedPOP",
    _ID_CMC + "11": "lraPOPWitness",
    _ID_CMC + "15": "getCert",
    _ID_CMC + "16": "getCRL",
    _ID_CMC + "17": "revokeRequest",
    _ID_CMC + "18": "regInfo",
    _ID_CMC + "19": "responseInfo",
    _ID_CMC + "21": "queryPending",
    _ID_CMC + "22": "popLinkRandom",
    _ID_CMC + "23": "popLinkWitness",
    _ID_CMC + "24": "confirmCertAcceptance",
    _ID_CMC + "25": "statusInfoV2",
    _ID_CMC + "26": "trustedAnchors",
    _ID_CMC + "27": "authData",
    _ID_CMC + "28": "batchRequests",
    _ID_CMC + "29": "batchResponses",
    _ID_CMC + "30": "publishCert",
    _ID_CMC + "31": "modCertTemplate",
    _ID_CMC + "32": "controlProcessed",
    _ID_CMC + "33": "popLinkWitnessV2",
    _ID_CMC + "34": "identityProofV2",
    _ID_CMC + "35": "raIdentityWitness",
    _ID_CMC + "36": "changeSubjectName",
    _ID_CMC + "37": "responseBody",
}
CONTROL_OIDS: dict[str, str] = {name: oid for oid, name in CONTROL_NAMES.items()}


class BodyPartPath(core.SequenceOf):  # type: ignore[misc]
    """RFC 6402 §2 BodyPartPath ::= SEQUENCE SIZE (1..MAX) OF BodyPartID."""

    _child_spec = core.Integer


class BodyPartReference(core.Choice):  # type: ignore[misc]
    """RFC 5272 §3.2.2 BodyPartReference ::= CHOICE { bodyPartID, bodyPartPath }."""

    _alternatives = [("body_part_id", core.Integer), ("body_part_path", BodyPartPath)]


class BodyPartReferences(core.SequenceOf):  # type: ignore[misc]
    _child_spec = BodyPartReference


class BodyPartList(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Integer


class PendInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.1.1 PendInfo."""

    _fields = [("pend_token", core.OctetString), ("pend_time", core.GeneralizedTime)]


class ExtendedFailInfo(core.Sequence):  # type: ignore[misc]
    """RFC 6402 §2 extendedFailInfo (read only: cmcgate never emits it)."""

    _fields = [("fail_info_oid", core.ObjectIdentifier), ("fail_info_value", core.Any)]


class OtherStatusInfoV2(core.Choice):  # type: ignore[misc]
    """RFC 6402 §2 OtherStatusInfo: the tagged ``[1]`` extendedFailInfo is recognised
    here; the untagged form of RFC 5272 surfaces as ``pend_info`` and is told apart by
    :mod:`cmc.asn1.controls` from its first element (an OID rather than an OCTET STRING)."""

    _alternatives = [
        ("fail_info", core.Integer),
        ("pend_info", PendInfo),
        ("extended_fail_info", ExtendedFailInfo, {"implicit": 1}),
    ]


class CMCStatusInfoV2(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.1.1 CMCStatusInfoV2."""

    _fields = [
        ("cmc_status", core.Integer),
        ("body_list", BodyPartReferences),
        ("status_string", core.UTF8String, {"optional": True}),
        ("other_info", OtherStatusInfoV2, {"optional": True}),
    ]


class OtherStatusInfo(core.Choice):  # type: ignore[misc]
    _alternatives = [("fail_info", core.Integer), ("pend_info", PendInfo)]


class CMCStatusInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.1.2 CMCStatusInfo (version 1, body parts by ID only)."""

    _fields = [
        ("cmc_status", core.Integer),
        ("body_list", BodyPartList),
        ("status_string", core.UTF8String, {"optional": True}),
        ("other_info", OtherStatusInfo, {"optional": True}),
    ]


class IdentityProofV2(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.2.1 IdentifyProofV2."""

    _fields = [
        ("proof_alg_id", algos.AlgorithmIdentifier),
        ("mac_alg_id", algos.AlgorithmIdentifier),
        ("witness", core.OctetString),
    ]


class PopLinkWitnessV2(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.3.1.1 PopLinkWitnessV2."""

    _fields = [
        ("key_gen_algorithm", algos.AlgorithmIdentifier),
        ("mac_algorithm", algos.AlgorithmIdentifier),
        ("witness", core.OctetString),
    ]


class SequenceOfInteger(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Integer


class AddExtensions(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.5.2 AddExtensions."""

    _fields = [
        ("pki_data_reference", core.Integer),
        ("cert_references", SequenceOfInteger),
        ("extensions", x509.Extensions),
    ]


class LraPopWitness(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.8 LraPopWitness."""

    _fields = [("pki_data_body_id", core.Integer), ("body_ids", SequenceOfInteger)]


class GetCert(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.9 GetCert."""

    _fields = [("issuer_name", x509.GeneralName), ("serial_number", core.Integer)]


class GetCRL(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.10 GetCRL."""

    _fields = [
        ("issuer_name", x509.Name),
        ("crl_name", x509.GeneralName, {"optional": True}),
        ("time", core.GeneralizedTime, {"optional": True}),
        ("reasons", x509.ReasonFlags, {"optional": True}),
    ]


class RevokeRequest(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.11 RevokeRequest."""

    _fields = [
        ("issuer_name", x509.Name),
        ("serial_number", core.Integer),
        ("reason", crl.CRLReason),
        ("invalidity_date", core.GeneralizedTime, {"optional": True}),
        ("passphrase", core.OctetString, {"optional": True}),
        ("comment", core.UTF8String, {"optional": True}),
    ]


class ControlsProcessed(core.Sequence):  # type: ignore[misc]
    """RFC 6402 §2 ControlsProcessed."""

    _fields = [("body_list", BodyPartReferences)]


class DecryptedPOP(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §6.7 DecryptedPOP."""

    _fields = [
        ("body_part_id", core.Integer),
        ("the_pop_alg_id", algos.AlgorithmIdentifier),
        ("the_pop", core.OctetString),
    ]


class ModCertTemplate(core.Sequence):  # type: ignore[misc]
    """RFC 6402 §2 ModCertTemplate."""

    _fields = [
        ("pki_data_reference", BodyPartPath),
        ("cert_references", BodyPartList),
        ("replace", core.Boolean, {"default": True}),
        ("cert_template", CertTemplate),
    ]


class ChangeSubjectName(core.Sequence):  # type: ignore[misc]
    """RFC 6402 §2 ChangeSubjectName."""

    _fields = [
        ("subject", x509.Name, {"optional": True}),
        ("subject_alt", x509.GeneralNames, {"implicit": 1, "optional": True}),
    ]


# --- PKIData / PKIResponse (RFC 5272 §3.2.1, §3.3.1) ------------------------------------


def _set_of(spec: _TypingAny) -> _TypingAny:
    return type(f"SetOf{spec.__name__}", (core.SetOf,), {"_child_spec": spec})


#: attrValues spec per control name; unknown OIDs keep raw values (SET OF ANY).
_CONTROL_VALUE_SPECS: dict[str, _TypingAny] = {
    "statusInfo": CMCStatusInfo,
    "statusInfoV2": CMCStatusInfoV2,
    "identification": core.UTF8String,
    "identityProof": core.OctetString,
    "identityProofV2": IdentityProofV2,
    "dataReturn": core.OctetString,
    "transactionId": core.Integer,
    "senderNonce": core.OctetString,
    "recipientNonce": core.OctetString,
    "addExtensions": AddExtensions,
    "decryptedPOP": DecryptedPOP,
    "lraPOPWitness": LraPopWitness,
    "getCert": GetCert,
    "getCRL": GetCRL,
    "revokeRequest": RevokeRequest,
    "regInfo": core.OctetString,
    "responseInfo": core.OctetString,
    "queryPending": core.OctetString,
    "popLinkRandom": core.OctetString,
    "popLinkWitness": core.OctetString,
    "popLinkWitnessV2": PopLinkWitnessV2,
    "confirmCertAcceptance": asn1_cms.IssuerAndSerialNumber,
    "authData": core.Integer,
    "batchRequests": BodyPartList,
    "batchResponses": BodyPartList,
    "modCertTemplate": ModCertTemplate,
    "controlProcessed": ControlsProcessed,
    "raIdentityWitness": BodyPartPath,
    "changeSubjectName": ChangeSubjectName,
    "responseBody": BodyPartPath,
}
#: Value spec (not the SET OF) for every control :mod:`cmc.asn1.controls` decodes.
CONTROL_VALUE_SPECS: dict[str, _TypingAny] = {
    CONTROL_OIDS[name]: spec for name, spec in _CONTROL_VALUE_SPECS.items()
}
_SET_SPECS = {oid: _set_of(spec) for oid, spec in CONTROL_VALUE_SPECS.items()}


class SetOfAny(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class TaggedAttribute(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §3.2.1.2.1 TaggedAttribute: a control with its body part ID."""

    _fields = [
        ("body_part_id", core.Integer),
        ("attr_type", core.ObjectIdentifier),
        ("attr_values", None),
    ]

    def _values_spec(self) -> _TypingAny:
        return _SET_SPECS.get(self["attr_type"].dotted, SetOfAny)

    _spec_callbacks = {"attr_values": _values_spec}


class RawTaggedAttribute(core.Sequence):  # type: ignore[misc]
    """TaggedAttribute with undecoded values, used to build any control."""

    _fields = [
        ("body_part_id", core.Integer),
        ("attr_type", core.ObjectIdentifier),
        ("attr_values", SetOfAny),
    ]


class TaggedCertificationRequest(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("body_part_id", core.Integer),
        ("certification_request", csr.CertificationRequest),
    ]


class OtherReqMsg(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("body_part_id", core.Integer),
        ("request_message_type", core.ObjectIdentifier),
        ("request_message_value", core.Any),
    ]


class TaggedRequest(core.Choice):  # type: ignore[misc]
    """RFC 5272 §3.2.1.3 TaggedRequest ::= CHOICE { tcr [0], crm [1], orm [2] }."""

    _alternatives = [
        ("tcr", TaggedCertificationRequest, {"implicit": 0}),
        ("crm", CertReqMsg, {"implicit": 1}),
        ("orm", OtherReqMsg, {"implicit": 2}),
    ]


class TaggedContentInfo(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §3.2.1.4 TaggedContentInfo."""

    _fields = [("body_part_id", core.Integer), ("content_info", asn1_cms.ContentInfo)]


class RawTaggedContentInfo(core.Sequence):  # type: ignore[misc]
    """TaggedContentInfo with the ContentInfo kept as received, used to build one."""

    _fields = [("body_part_id", core.Integer), ("content_info", core.Any)]


class OtherMsg(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §3.2.1.5 OtherMsg."""

    _fields = [
        ("body_part_id", core.Integer),
        ("other_msg_type", core.ObjectIdentifier),
        ("other_msg_value", core.Any),
    ]


class TaggedAttributes(core.SequenceOf):  # type: ignore[misc]
    _child_spec = TaggedAttribute


class TaggedRequests(core.SequenceOf):  # type: ignore[misc]
    _child_spec = TaggedRequest


class TaggedContentInfos(core.SequenceOf):  # type: ignore[misc]
    _child_spec = TaggedContentInfo


class OtherMsgs(core.SequenceOf):  # type: ignore[misc]
    _child_spec = OtherMsg


class PKIData(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §3.2.1 PKIData."""

    _fields = [
        ("control_sequence", TaggedAttributes),
        ("req_sequence", TaggedRequests),
        ("cms_sequence", TaggedContentInfos),
        ("other_msg_sequence", OtherMsgs),
    ]


class PKIResponse(core.Sequence):  # type: ignore[misc]
    """RFC 5272 §3.3.1 PKIResponse."""

    _fields = [
        ("control_sequence", TaggedAttributes),
        ("cms_sequence", TaggedContentInfos),
        ("other_msg_sequence", OtherMsgs),
    ]
