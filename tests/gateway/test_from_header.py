"""The From header's display name for the envelope sender (the Gold CN source)."""

from __future__ import annotations

import pytest

from gateway.from_header import display_name

CASES = [
    (b"From: Alice  Example <alice@example.org>", "Alice Example"),
    (b'From: "Example, Alice" <Alice@Example.ORG>', "Example, Alice"),
    (b"From: =?UTF-8?Q?J=C3=BCrg_M=C3=BCller?= <alice@example.org>", "J\u00fcrg M\u00fcller"),
    (b"From: =?ISO-8859-1?Q?J=FCrg?= Example <alice@example.org>", "J\u00fcrg Example"),
    (b"From: =?UTF-8?B?Sm/DqyBTbWl0aA==?= <alice@example.org>", "Jo\u00eb Smith"),
    (b"From: J\xc3\xbcrg M\xc3\xbcller <alice@example.org>", "J\u00fcrg M\u00fcller"),  # RFC 6532
    (b"From: J\xfcrg <alice@example.org>", None),  # 8-bit of unknown charset: no name
    (b"From: alice@example.org", None),
    (b"From: <alice@example.org>", None),
    (b"From: Boss <boss@example.org>", None),  # another mailbox's name is not the sender's
    (b"From: Boss <boss@example.org>, Alice A <alice@example.org>", "Alice A"),
    (b"From: <<<>>", None),
    (b"Subject: no from at all", None),
]


@pytest.mark.parametrize(("field", "expected"), CASES)
def test_display_name_of_the_sender(field: bytes, expected: str | None) -> None:
    message = field + b"\r\nTo: bob@partner.example\r\n\r\nFrom: Body <alice@example.org>\r\n"
    assert display_name(message, "alice@example.org") == expected


def test_only_the_header_block_is_read() -> None:
    message = b"To: bob@partner.example\n\nFrom: Body Text <alice@example.org>\n"
    assert display_name(message, "alice@example.org") is None
