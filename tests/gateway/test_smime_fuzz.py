"""Hostile input: arbitrary and mutated bytes into every S/MIME entry point raise only
project errors (CmcgateError subclasses) — never a crash, never a foreign exception."""

from __future__ import annotations

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import CmcgateError
from gateway.smime import decrypt, encrypt, sign, smime_kind, strip_signature_headers, verify
from tests.gateway.certs import Identity, make_ca
from tests.gateway.test_smime_outbound import PLAIN, rich_message


@functools.cache
def _people() -> tuple[Identity, Identity]:
    ca = make_ca()
    return ca.issue("alice@example.org"), ca.issue("bob@example.net")


@functools.cache
def _seeds() -> tuple[bytes, ...]:
    alice, bob = _people()
    return (
        sign(PLAIN, alice.key, alice.cert, alice.chain),
        sign(PLAIN, alice.key, alice.cert, alice.chain, detached=False),
        encrypt(PLAIN, [bob.cert]),
        rich_message(),
    )


def _every_entry_point(data: bytes) -> None:
    alice, bob = _people()
    calls = (
        lambda: verify(data, trust_anchors=[make_ca().cert]),
        lambda: decrypt(data, bob.rsa_key, bob.cert),
        lambda: smime_kind(data),
        lambda: strip_signature_headers(data),
        lambda: sign(data, alice.key, alice.cert),
    )
    for call in calls:
        try:
            call()
        except CmcgateError:
            pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    seed = bytearray(draw(st.sampled_from(_seeds())))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(seed) - 1, 0)))
        if op == "flip" and seed:
            seed[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del seed[pos : pos + draw(st.integers(1, 400))]
        else:
            seed[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n--", b":", b"\x00", b"=", b"\xff"]))
    return bytes(seed)


_MIMEISH = st.lists(
    st.sampled_from(
        [
            b"From: a@b\r\n",
            b"Content-Type: multipart/signed; boundary=b\r\n",
            b"\r\n",
            b"--b\r\n",
            b"--b--\r\n",
            b"Content-Type: application/pkcs7-mime\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"MIIB\r\n",
            b" folded\r\n",
            b"\xc3\xa9",
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Transfer-Encoding: binary\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: application/pkcs7-signature\r\n",
        ]
    ),
    max_size=30,
).map(b"".join)
_FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
_LONG = settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))


@_FAST
@given(st.binary(max_size=2000) | _MIMEISH | mutated())
def test_hostile_bytes_raise_only_project_errors(data: bytes) -> None:
    _every_entry_point(data)


@pytest.mark.fuzz
@_LONG
@given(st.binary(max_size=4000) | _MIMEISH | mutated())
def test_hostile_bytes_raise_only_project_errors_at_length(data: bytes) -> None:
    _every_entry_point(data)
