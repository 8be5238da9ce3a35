"""revokeRequest reasons are accepted in RFC 5280 spelling and asn1crypto spelling alike."""

from __future__ import annotations

import pytest

from cmc.asn1.controls import crl_reason_name
from cmc.errors import MalformedMessage


@pytest.mark.parametrize(
    ("given", "native"),
    [
        ("keyCompromise", "key_compromise"),
        ("key_compromise", "key_compromise"),
        ("cACompromise", "ca_compromise"),
        ("affiliationChanged", "affiliation_changed"),
        ("superseded", "superseded"),
        ("cessationOfOperation", "cessation_of_operation"),
        ("privilegeWithdrawn", "privilege_withdrawn"),
        ("aACompromise", "aa_compromise"),
        ("removeFromCRL", "remove_from_crl"),
    ],
)
def test_rfc5280_reason_names_map_to_the_der_enumeration(given: str, native: str) -> None:
    assert crl_reason_name(given) == native


def test_an_unknown_reason_is_refused_with_the_library_error() -> None:
    with pytest.raises(MalformedMessage):
        crl_reason_name("becauseISaidSo")
