"""DNs as admins write them: RFC 4514 and the slash form with SwissSign's stray spaces."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from config.dn import format_dn, parse_dn
from config.errors import DnError


def test_the_swisssign_slash_template_with_stray_spaces_parses_cleanly():
    name = parse_dn("/CN=Secure Mail: Gateway Certificate /O=Organisation name/ C=CH")

    assert name.rfc4514_string() == "CN=Secure Mail: Gateway Certificate,O=Organisation name,C=CH"
    # DER order: most significant first, as certificates carry it
    assert [rdn.get_attributes_for_oid(NameOID.COUNTRY_NAME) != [] for rdn in name.rdns] == [
        True,
        False,
        False,
    ]


def test_openssl_order_slash_form_gives_the_same_name():
    assert parse_dn("/C=CH/O=Organisation name/CN=Secure Mail: Gateway Certificate") == parse_dn(
        "/CN=Secure Mail: Gateway Certificate /O=Organisation name/ C=CH"
    )


def test_rfc4514_and_slash_forms_agree():
    expected = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SwissSign AG"),
            x509.NameAttribute(NameOID.COMMON_NAME, "SwissSign RSA SMIME Root CA 2022 - 1"),
        ]
    )

    assert parse_dn("CN=SwissSign RSA SMIME Root CA 2022 - 1,O=SwissSign AG,C=CH") == expected
    assert parse_dn("CN=SwissSign RSA SMIME Root CA 2022 - 1, O=SwissSign AG, C=CH") == expected
    assert parse_dn("/C=CH/O=SwissSign AG/CN=SwissSign RSA SMIME Root CA 2022 - 1") == expected


def test_escapes_quotes_and_multi_valued_rdns_in_rfc4514():
    name = parse_dn(r'CN=Doe\, John+E=john@example.org,O="Example, Inc.",C=ch')

    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Doe, John"
    assert name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example, Inc."
    assert name.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "CH"
    assert len(name.rdns[-1]) == 2
    assert format_dn(name) == r"CN=Doe\, John+E=john@example.org,O=Example\, Inc.,C=CH"


def test_hex_escapes_and_escaped_slashes():
    assert parse_dn(r"CN=Z\C3\BCrich").rfc4514_string() == "CN=Zürich"
    assert parse_dn(r"/CN=a\/b").rfc4514_string() == "CN=a/b"


def test_email_and_oid_attribute_names():
    name = parse_dn("/emailAddress=a@example.org/CN=x")
    assert name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "a@example.org"
    assert parse_dn("2.5.4.3=x") == parse_dn("CN=x")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the DN is empty"),
        ("/CN=x/O=y/C=Country code", "C must be a two-letter country code"),
        ("CN=", "CN is empty"),
        ("CN=x,,O=y", "has no '='"),
        ("FOO=bar", "unknown attribute type 'FOO'"),
        ("/CN=x//O=y", "empty component"),
        ("/CN", "has no '='"),
        ("CN=#0403", "BER-encoded"),
        ('CN="open', "unterminated"),
        (r"CN=\ZZ", "invalid escape"),
        ("CN=a\x00b", "control character"),
        ("E=j\u00f6@example.org", "ASCII"),
        ("CN=" + "x" * 65, "length"),
    ],
)
def test_bad_dns_raise_dn_error_saying_why(text, problem):
    with pytest.raises(DnError, match=problem):
        parse_dn(text)
