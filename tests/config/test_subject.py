"""certSubjectDN templates become one user's subject and SAN (Silver and Gold)."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import NameOID

from config.dn import format_dn, parse_dn
from config.errors import ConfigError, DnError
from config.properties import load
from config.subject import ProductKind, check_template, subject_for

from .conftest import SWISSSIGN_BLOCK

GOLD_TEMPLATE = parse_dn("/CN=Secure Mail: Gateway Certificate /O=Example AG/ C=CH/E=x@y.z")
SILVER_TEMPLATE = parse_dn("CN=Secure Mail: Gateway Certificate")


def test_gold_replaces_the_cn_with_the_display_name_and_the_email_with_the_users():
    name, san = subject_for(
        GOLD_TEMPLATE,
        email="Alice.Muster@Example.ORG",
        display_name="Alice  Muster",
        kind=ProductKind.GOLD,
    )

    assert format_dn(name) == "E=Alice.Muster@example.org,C=CH,O=Example AG,CN=Alice Muster"
    assert san == ["Alice.Muster@example.org"]


def test_gold_without_a_display_name_has_no_subject_the_address_is_no_stand_in():
    with pytest.raises(DnError, match="Gold certificate's CN is the user's name.*none"):
        subject_for(GOLD_TEMPLATE, email="bob@example.org", kind=ProductKind.GOLD)


@pytest.mark.parametrize("name", ["x" * 65, "  ", "bob@example.org", "Bob\x07 Bell"])
def test_gold_refuses_an_unusable_display_name(name):
    with pytest.raises(DnError, match="no usable display name"):
        subject_for(
            GOLD_TEMPLATE, email="bob@example.org", display_name=name, kind=ProductKind.GOLD
        )


def test_a_gold_display_name_may_be_any_unicode_name():
    name, _ = subject_for(
        GOLD_TEMPLATE, email="j@example.org", display_name="J\u00fcrg M\u00fcller",
        kind=ProductKind.GOLD,
    )  # fmt: skip

    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "J\u00fcrg M\u00fcller"


def test_silver_keeps_the_templates_cn_and_puts_the_address_in_the_san():
    name, san = subject_for(
        SILVER_TEMPLATE, email="carol@example.org", display_name="Carol", kind=ProductKind.SILVER
    )

    assert format_dn(name) == "CN=Secure Mail: Gateway Certificate"
    assert san == ["carol@example.org"]


def test_a_silver_template_may_carry_an_email_attribute_which_is_replaced():
    template = parse_dn("/CN=Secure Mail/emailAddress=placeholder@example.org")

    name, _ = subject_for(template, email="dave@example.org", kind=ProductKind.SILVER)

    assert name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "dave@example.org"


@pytest.mark.parametrize("email", ["", "no-at-sign", "a b@example.org", "j\u00f6rg@example.org"])
def test_addresses_a_certificate_cannot_hold_are_refused(email):
    with pytest.raises(DnError):
        subject_for(GOLD_TEMPLATE, email=email, display_name="Bob Example", kind=ProductKind.GOLD)


def test_a_silver_template_with_more_than_a_cn_is_refused():
    with pytest.raises(DnError, match="holds only the CN, not C, O"):
        check_template(parse_dn("CN=x,O=y,C=CH"), ProductKind.SILVER)


def test_the_kind_comes_from_the_product_name(write_props):
    pki = load(write_props(SWISSSIGN_BLOCK)).pki

    assert pki is not None
    assert (pki.product_kind, pki.product_kind_source) == (ProductKind.GOLD, "product")
    name, san = pki.subject_for("eve@example.org", "Eve Example")
    assert format_dn(name) == "CN=Eve Example,O=Organisation name,C=CH"
    assert san == ["eve@example.org"]


def test_the_kind_comes_from_the_template_when_the_product_does_not_say(write_props):
    text = SWISSSIGN_BLOCK.replace("product=totemo-persogold", "product=acme-mail").replace(
        "certSubjectDN=/CN=Secure Mail: Gateway Certificate /O=Organisation name/ C=CH",
        "certSubjectDN=CN=Secure Mail",
    )

    pki = load(write_props(text)).pki

    assert pki is not None
    assert (pki.product_kind, pki.product_kind_source) == (ProductKind.SILVER, "template")


def test_an_explicit_kind_wins_and_a_silver_product_with_an_o_is_an_error(write_props):
    explicit = write_props(SWISSSIGN_BLOCK + "cmcgate.pki.productKind=Silver\n")

    with pytest.raises(ConfigError) as caught:
        load(explicit)

    assert str(caught.value) == (
        f"{explicit}:11: security.pkiConnection.certSubjectDN: a Silver template holds only the "
        "CN, not C, O (set cmcgate.pki.productKind=gold if this is a Gold product)"
    )
