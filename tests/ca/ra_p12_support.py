"""A software-key CA with PKCS#12 products, a notifier that records what would be mailed,
and an order stranded half-way (for the clean-up): shared by the h-p12 RA tests."""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.profiles.builder import build_tbs
from ca.profiles.types import IssuanceRequest, Organization
from ca.store.model import OrderStatus
from tests.certbuild import email_csr_der

ACCOUNT = "example.ra"
SILVER, P12, BOTH, MANUAL_P12 = "silver", "silver-p12", "silver-both", "silver-p12-manual"
DOMAIN = "example.org"
S = OrderStatus


@dataclass
class RecordingNotifier:
    """Records each mail the RA would send (kind, recipient, fields): the test's mailbox."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    fail_on: str | None = None

    def send(
        self,
        kind: str,
        recipient: str,
        *,
        order_id: str | None = None,
        serial: str | None = None,
        **fields: object,
    ) -> object:
        if kind == self.fail_on:
            from config.errors import CmcgateError

            raise CmcgateError(f"SMTP server refused the {kind} mail")
        call = {"kind": kind, "to": recipient, "order_id": order_id, "serial": serial, **fields}
        self.calls.append(call)
        return call

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["kind"] == kind]


def make_ca_dir(directory: Path) -> Path:
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url="http://127.0.0.1:8480", account_id=ACCOUNT, email_domains=(DOMAIN,),
        product_id=SILVER,
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    doc = yaml.safe_load(ca_yaml.read_text())
    base = doc["products"][SILVER]
    doc["products"][SILVER]["key_types"] = ["ec-p256", "rsa2048"]
    for name, extra in (
        (P12, {"key_generation": "pkcs12"}),
        (BOTH, {"key_generation": "both"}),
        (MANUAL_P12, {"key_generation": "pkcs12", "approval": "manual"}),
    ):
        doc["products"][name] = {**copy.deepcopy(base), "key_types": ["ec-p256", "rsa2048"],
                                 **extra}  # fmt: skip
    doc["accounts"][ACCOUNT]["products"] = [SILVER, P12, BOTH, MANUAL_P12]
    doc["ra"] = {"public_url": "https://ra.example.org:8444"}
    ca_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return ca_yaml


def csr_der(email: str, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    return email_csr_der(email, key=key)


def strand(ca: CertificateAuthority, email: str, stop_at: OrderStatus, *, signed: bool) -> str:
    """A real order driven as ``CertificateAuthority._issue`` drives it, left in ``stop_at``
    as a lost worker thread would leave it; ``signed``: its certificate was stored."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = csr_der(email, key)
    csr = x509.load_der_x509_csr(der)
    order = ca.store.new_order(ACCOUNT, SILVER, csr.subject.rfc4514_string(), [email], "default",
                               requested_by="test", csr_der=der)  # fmt: skip
    path = [S.KEY_VALIDATION, S.GENERATE_TBS, S.PRE_VALIDATION, S.PRE_ISSUE, S.ISSUE]
    if stop_at in path:
        ca.store.advance(order.id, *path[: path.index(stop_at) + 1])
    if signed:
        account, product = ca.settings.account(ACCOUNT), ca.settings.product(SILVER)
        assert account is not None and product is not None
        request = IssuanceRequest(key.public_key(), csr.subject, (email,), timedelta(days=365))
        prepared = build_tbs(
            product.profile, request, Organization.from_account(account), ca.issuing_cert,
            ca.endpoints(), now=datetime.now(UTC),
        )  # fmt: skip
        cert = prepared.sign(ca.keys.load(ca.settings.ca.issuing.key_label))
        ca.store.record_certificate(order.id, cert.public_bytes(serialization.Encoding.DER))
    return order.id


def openssl(*args: str, input_data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=input_data, capture_output=True, check=False)
