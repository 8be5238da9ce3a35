"""The byte-exact MIME layer under the S/MIME transforms (RFC 2045/2046, RFC 8551 §3.1)."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smime.encoding import prepare_entity, split_outer
from gateway.smime.mime import canonical, split_message, split_multipart


def _prepared(message: bytes) -> bytes:
    return prepare_entity(split_outer(message)[1])


def test_multipart_parts_come_back_byte_for_byte_including_binary_noise():
    noise = b"\x00\r\x7f\xff\r\n \t\n--not-the-boundary\n"
    body = b"pre\r\n--b\r\nA: 1\r\n\r\n" + noise + b"\r\n--b \r\n\r\nx\n--b--\r\nepilogue"
    split = split_multipart(body, "b")
    assert split.preamble == b"pre"
    assert split.parts == (b"A: 1\r\n\r\n" + noise, b"\r\nx")
    assert split.trailer == b"\r\nepilogue"


def test_folded_header_fields_keep_their_lines():
    entity = split_message(b"Subject: one\n two\r\n\tthree\nFrom: a@b\n\nbody")
    assert entity.fields[0].raw == b"Subject: one\r\n two\r\n\tthree"
    assert entity.get("subject") == "one two\tthree"
    assert entity.body == b"body"


def test_a_clean_crlf_seven_bit_entity_is_signed_as_is():
    inner = b'Content-Type: multipart/alternative; boundary="q"\r\n\r\n--q\r\n' + (
        b"Content-Type: text/plain\r\n\r\nhi\r\n--q--\r\n"
    )
    assert _prepared(b"From: a@b\r\n" + inner) == inner
    assert prepare_entity(split_message(inner)) == inner


def test_raw_utf8_filename_becomes_rfc2231_and_long_lines_become_quoted_printable():
    message = (
        b"From: a@b\nContent-Type: text/plain; charset=utf-8\n"
        b'Content-Disposition: attachment; filename="Gr\xc3\xbc\xc3\x9fe.txt"\n\n'
        + b"x" * 1500
        + b"\n"
    )
    prepared = _prepared(message)
    assert prepared.isascii()
    assert max(len(line) for line in prepared.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(prepared, policy=email.policy.default)
    assert parsed.get_filename() == "Grüße.txt"
    assert parsed.get_content().rstrip("\r\n") == "x" * 1500


def test_eight_bit_forwarded_message_is_converted_inside_message_rfc822():
    nested = b"Subject: fwd\nContent-Type: text/plain; charset=utf-8\n\nh\xc3\xa9llo\n"
    message = b"From: a@b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n"
    prepared = _prepared(message + nested)
    assert prepared.isascii()
    assert b"Content-Transfer-Encoding: 7bit\r\n" in prepared
    inner = email.message_from_bytes(prepared, policy=email.policy.default).get_content()
    assert inner.get_content().rstrip("\r\n") == "héllo"


def test_a_signed_part_inside_is_never_reencoded():
    signed = b'Content-Type: multipart/signed; boundary="s"\r\n\r\n--s\r\n\xff raw\r\n--s--\r\n'
    assert _prepared(b"From: a@b\r\n" + signed) == signed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["binary", "8bit", "7bit"]))
def test_any_attachment_bytes_survive_preparation(payload: bytes, cte: str):
    message = (
        b"From: a@b\nContent-Type: application/octet-stream\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\n\n" + payload
    )
    prepared = _prepared(message)
    assert prepared == canonical(prepared) and prepared.isascii()
    parsed = email.message_from_bytes(prepared, policy=email.policy.default)
    if payload.isascii() and b"\r" not in payload and b"\0" not in payload and cte != "binary":
        if all(len(line) <= 998 for line in payload.split(b"\n")):
            return  # left as is (7-bit safe text); only its line endings were canonicalised
    assert parsed.get_payload(decode=True) == payload
    assert prepare_entity(split_message(prepared)) == prepared


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_any_utf8_text_survives_preparation(text: str):
    message = b"From: a@b\nContent-Type: text/plain; charset=utf-8\n\n" + text.encode()
    prepared = _prepared(message)
    assert prepared.isascii()
    decoded = email.message_from_bytes(prepared, policy=email.policy.default).get_content()
    normalise = lambda s: s.replace("\r\n", "\n").replace("\r", "\n")  # noqa: E731
    assert normalise(decoded) == normalise(text)
