"""CRMF types (RFC 4211 §5), just as far as a CMC ``crm`` request and modCertTemplate need."""

from __future__ import annotations

from asn1crypto import algos, core, keys, x509


class AttributeTypeAndValue(core.Sequence):  # type: ignore[misc]
    _fields = [("type", core.ObjectIdentifier), ("value", core.Any)]


class AttributeTypeAndValues(core.SequenceOf):  # type: ignore[misc]
    _child_spec = AttributeTypeAndValue


class OptionalValidity(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("not_before", x509.Time, {"explicit": 0, "optional": True}),
        ("not_after", x509.Time, {"explicit": 1, "optional": True}),
    ]


class CertTemplate(core.Sequence):  # type: ignore[misc]
    """RFC 4211 §5 CertTemplate (module uses IMPLICIT tags; Name is a CHOICE: explicit)."""

    _fields = [
        ("version", core.Integer, {"implicit": 0, "optional": True}),
        ("serial_number", core.Integer, {"implicit": 1, "optional": True}),
        ("signing_alg", algos.AlgorithmIdentifier, {"implicit": 2, "optional": True}),
        ("issuer", x509.Name, {"explicit": 3, "optional": True}),
        ("validity", OptionalValidity, {"implicit": 4, "optional": True}),
        ("subject", x509.Name, {"explicit": 5, "optional": True}),
        ("public_key", keys.PublicKeyInfo, {"implicit": 6, "optional": True}),
        ("issuer_uid", core.BitString, {"implicit": 7, "optional": True}),
        ("subject_uid", core.BitString, {"implicit": 8, "optional": True}),
        ("extensions", x509.Extensions, {"implicit": 9, "optional": True}),
    ]


class CertRequest(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("cert_req_id", core.Integer),
        ("cert_template", CertTemplate),
        ("controls", AttributeTypeAndValues, {"optional": True}),
    ]


class POPOSigningKeyInput(core.Sequence):  # type: ignore[misc]
    _fields = [("auth_info", core.Any), ("public_key", keys.PublicKeyInfo)]


class POPOSigningKey(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("poposk_input", POPOSigningKeyInput, {"implicit": 0, "optional": True}),
        ("algorithm_identifier", algos.AlgorithmIdentifier),
        ("signature", core.BitString),
    ]


class ProofOfPossession(core.Choice):  # type: ignore[misc]
    _alternatives = [
        ("ra_verified", core.Null, {"implicit": 0}),
        ("signature", POPOSigningKey, {"implicit": 1}),
        ("key_encipherment", core.Any, {"explicit": 2}),
        ("key_agreement", core.Any, {"explicit": 3}),
    ]


class CertReqMsg(core.Sequence):  # type: ignore[misc]
    """RFC 4211 §3 CertReqMsg."""

    _fields = [
        ("cert_req", CertRequest),
        ("popo", ProofOfPossession, {"optional": True}),
        ("reg_info", AttributeTypeAndValues, {"optional": True}),
    ]
