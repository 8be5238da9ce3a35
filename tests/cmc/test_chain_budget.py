"""Path building is bounded: CA certificates that certify each other cost a fixed amount of
work, and the real path is still found when such certificates come along with it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cmc.errors import PathSearchExhausted, UntrustedSigner
from cmc.messages.chain import MAX_CANDIDATES, MAX_SIGNATURE_CHECKS, PathBudget
from cmc.messages.cms import verify_chain
from tests.cmc.conftest import NOW, PkiFixture
from tests.cmc.cross_certified import cross_certified


def test_two_hundred_cross_certified_ca_certificates_are_refused_after_bounded_work(
    pki: PkiFixture,
) -> None:
    mesh = cross_certified(200, not_before=NOW - timedelta(days=1))
    _, leaf = mesh.issue("victim@example.org")
    budget = PathBudget()
    with pytest.raises(PathSearchExhausted, match="path search gave up after") as refused:
        verify_chain(
            leaf,
            mesh.certificates,
            [pki.root],
            at=NOW,
            required_eku=ExtendedKeyUsageOID.EMAIL_PROTECTION,
            budget=budget,
        )
    assert isinstance(refused.value, UntrustedSigner)  # what every caller already handles
    # It stopped because a limit was reached, and went no further.
    assert budget.signature_checks <= MAX_SIGNATURE_CHECKS
    assert budget.candidates <= MAX_CANDIDATES
    assert budget.signature_checks == MAX_SIGNATURE_CHECKS or budget.candidates == MAX_CANDIDATES


def test_a_smaller_budget_is_honoured_exactly(pki: PkiFixture) -> None:
    mesh = cross_certified(16, not_before=NOW - timedelta(days=1))
    _, leaf = mesh.issue("victim@example.org")
    budget = PathBudget(max_signature_checks=5, max_candidates=10_000)
    with pytest.raises(PathSearchExhausted, match="after 5 signature checks"):
        verify_chain(leaf, mesh.certificates, [pki.root], at=NOW, budget=budget)
    assert budget.signature_checks == 5


def test_the_real_path_is_found_past_two_hundred_impostors_of_its_issuer(
    pki: PkiFixture,
) -> None:
    """Impostors carry the issuing CA's name and claim its subjectKeyIdentifier; they come
    first in the message. The leaf's authorityKeyIdentifier names the real key."""
    ca_key_id = x509.SubjectKeyIdentifier.from_public_key(pki.ca_key.public_key()).digest
    impostors = cross_certified(
        200, not_before=NOW - timedelta(days=1), name=pki.ca.subject, claimed_key_id=ca_key_id
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a@example.org")]))
        .issuer_name(pki.ca.subject)
        .public_key(pki.user_ec.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.ca_key.public_key()),
            critical=False,
        )
        .sign(pki.ca_key, hashes.SHA256())
    )
    budget = PathBudget()
    path = verify_chain(leaf, [*impostors.certificates, pki.ca], [pki.root], at=NOW, budget=budget)
    assert path == [leaf, pki.ca, pki.root]
    assert budget.signature_checks == 2
