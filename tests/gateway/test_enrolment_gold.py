"""Gold (sponsor-validated) enrolment: the From header's display name becomes the CN.

The bundled CA serves CMC over HTTPS (client certificate) with a ``sponsor`` product; the
gateway takes mail over real SMTP and enrols the sender on her first mail through the real
CMC client.  The CA composes and pkilint-checks the subject; openssl judges the signature.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca.profiles.lint import DEVELOPMENT_IGNORED_CODES, Severity
from ca.profiles.types import ProfileKind
from ca.store.model import OrderStatus
from config.properties import load
from gateway.certs.models import Source
from gateway.devservices import SmtpSink
from gateway.smime import smime_kind
from tests.gateway.test_enrolment import (
    BundledCa,
    Gateway,
    make_gateway,
    openssl_signer,
    running_bundled_ca,
    write_properties,
)

__all__ = ["make_gateway"]  # the fixture, used with this module's `bundled`

GOLD_TEMPLATE = "CN=Secure Mail: Gateway Certificate,O=Example AG,C=CH"


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, ...]]:
    tmp = tmp_path_factory.mktemp("gold-ca")
    with running_bundled_ca(tmp) as (ca, auto, manual):
        gold = load(
            write_properties(tmp, ca, "example-gold", "gold", subject_template=GOLD_TEMPLATE)
        ).pki
        assert gold is not None and gold.product_kind.value == "gold"
        yield ca, auto, manual, gold


@pytest.fixture
def gold_gateway(bundled: tuple[object, ...], make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway(pki=bundled[3])


def lint_errors(ca: BundledCa, cert: x509.Certificate) -> list[object]:
    """The CA's pkilint findings at WARNING or above for a sponsor certificate, except those
    it ignores because its CRL/AIA URLs are on loopback (``cabf.internal_domain_name``)."""
    findings = ca.service.ca.linter.lint(cert.public_bytes(Encoding.DER), ProfileKind.SPONSOR)
    return [
        f for f in findings
        if f.severity >= Severity.WARNING and f.code not in DEVELOPMENT_IGNORED_CODES
    ]  # fmt: skip


def _orders(ca: BundledCa, email: str) -> list[object]:
    return ca.orders_for(email)


def _cn(cert: x509.Certificate) -> x509.NameAttribute:
    [attribute] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attribute


def _reply_code(gateway: Gateway, sender: str, from_header: str) -> int:
    try:
        gateway.send(sender, from_header=from_header)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code
    return 250


def test_gold_enrolment_over_cmc_issues_the_display_name_as_cn_lint_clean(
    gold_gateway: Gateway, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gold_gateway.send("alice@example.org", from_header="Alice Example <alice@example.org>")
    [record] = gold_gateway.store.find(email="alice@example.org")
    cert = record.certificate
    assert record.source is Source.PKI
    assert _cn(cert).value == "Alice Example"
    assert cert.subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Alice"
    assert cert.subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Example"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example AG"
    # the CA issued it through its sponsor profile, and its linter finds nothing to object to
    [order] = _orders(gold_gateway.ca, "alice@example.org")
    assert order.status is OrderStatus.ISSUED  # type: ignore[attr-defined]
    assert lint_errors(gold_gateway.ca, cert) == []
    [delivered] = smtp_sink.received()
    assert smime_kind(delivered.content) == "signed"
    assert openssl_signer(tmp_path, gold_gateway.ca, delivered.content) == cert


def test_an_rfc2047_display_name_becomes_a_utf8string_cn(
    gold_gateway: Gateway, smtp_sink: SmtpSink
) -> None:
    gold_gateway.send(
        "juerg@example.org", from_header="=?UTF-8?Q?J=C3=BCrg_M=C3=BCller?= <juerg@example.org>"
    )
    [record] = gold_gateway.store.find(email="juerg@example.org")
    cn = _cn(record.certificate)
    assert cn.value == "J\u00fcrg M\u00fcller"
    assert cn._type is x509.name._ASN1Type.UTF8String  # noqa: SLF001 - the DER string type
    assert lint_errors(gold_gateway.ca, record.certificate) == []
    [delivered] = smtp_sink.received()
    assert smime_kind(delivered.content) == "signed"


def test_without_a_display_name_nothing_is_ordered_and_sign_always_answers_451(
    gold_gateway: Gateway, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    assert _reply_code(gold_gateway, "nona@example.org", "nona@example.org") == 451
    assert (
        _reply_code(gold_gateway, "nona@example.org", '"nona@example.org" <nona@example.org>')
        == 451
    )
    assert _orders(gold_gateway.ca, "nona@example.org") == []  # the CA was not asked
    assert gold_gateway.keys.labels_for("nona@example.org") == []  # no key made either
    assert "Gold certificate's CN is the user's name" in caplog.text
    assert smtp_sink.received() == []
    # not remembered as a refusal: her next mail with a name enrols at once
    gold_gateway.send("nona@example.org", from_header="Nona Named <nona@example.org>")
    [record] = gold_gateway.store.find(email="nona@example.org")
    assert _cn(record.certificate).value == "Nona Named"


def test_a_changed_display_name_keeps_using_the_existing_certificate(
    gold_gateway: Gateway, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    gold_gateway.send("carol@example.org", from_header="Carol Example <carol@example.org>")
    gold_gateway.send("carol@example.org", from_header="Carol Married-Name <carol@example.org>")
    gold_gateway.send("carol@example.org")  # no display name at all
    [record] = gold_gateway.store.find(email="carol@example.org")
    assert len(_orders(gold_gateway.ca, "carol@example.org")) == 1
    received = smtp_sink.received()
    assert len(received) == 3
    for message in received:
        assert openssl_signer(tmp_path, gold_gateway.ca, message.content) == record.certificate


def test_another_mailbox_in_from_does_not_lend_its_name_to_the_sender(
    gold_gateway: Gateway,
) -> None:
    """An assistant sending as ``From: Boss <boss@...>``: Boss is not the sender's name."""
    code = _reply_code(gold_gateway, "assistant@example.org", "Big Boss <boss@example.org>")
    assert code == 451
    assert _orders(gold_gateway.ca, "assistant@example.org") == []
