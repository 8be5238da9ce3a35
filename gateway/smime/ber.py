"""A minimal BER reader (X.690 §8) for the outer layers of a CMS envelope.

Mail clients send EnvelopedData in BER: gpgsm and ``openssl cms -stream`` use indefinite
lengths and split the ciphertext into a constructed OCTET STRING of many chunks.  asn1crypto
reads that fine, but copies the whole remaining input once per nesting level; for a 25 MB
message that is five copies of the ciphertext.  This reader walks the same structure by
offsets into one buffer, so the ciphertext is never copied before it is decrypted, and the
small parts (recipient infos, algorithm identifiers) are handed to asn1crypto as bytes.

Only what CMS uses is accepted: single-byte tags (numbers below 31), lengths of at most
eight octets, constructed strings nested at most :data:`MAX_DEPTH` deep.  Anything else is
:class:`MalformedMessage`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.smime.errors import MalformedMessage

MAX_DEPTH = 32
OCTET_STRING = 0x04


@dataclass(frozen=True)
class Tlv:
    """One element: its identifier octet, where its contents are, and where it ends."""

    tag: int  # the whole identifier octet (class, constructed bit, number)
    start: int
    content_start: int
    content_end: int  # before the end-of-contents octets of an indefinite length
    end: int

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    @property
    def number(self) -> int:
        """The tag number with the class and constructed bits masked off."""
        return self.tag & 0x1F


def read(buf: bytes, pos: int, limit: int | None = None, depth: int = 0) -> Tlv:
    """The element starting at ``pos`` (which must end at or before ``limit``)."""
    limit = len(buf) if limit is None else limit
    if depth > MAX_DEPTH:
        raise MalformedMessage("BER nested too deep")
    if pos + 2 > limit:
        raise MalformedMessage("BER element cut short")
    tag, first = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise MalformedMessage("BER tag numbers above 30 are not used by CMS")
    head = pos + 2
    if first == 0x80:
        if not tag & 0x20:
            raise MalformedMessage("indefinite length on a primitive BER element")
        cursor = head
        while True:
            if cursor + 2 > limit:
                raise MalformedMessage("BER indefinite length without end-of-contents")
            if buf[cursor] == 0 and buf[cursor + 1] == 0:
                return Tlv(tag, pos, head, cursor, cursor + 2)
            cursor = read(buf, cursor, limit, depth + 1).end
    if first & 0x80:
        size = first & 0x7F
        if size > 8 or head + size > limit:
            raise MalformedMessage("BER length field too long or cut short")
        length = int.from_bytes(buf[head : head + size], "big")
        head += size
    else:
        length = first
    end = head + length
    if end > limit:
        raise MalformedMessage("BER element longer than its container")
    return Tlv(tag, pos, head, end, end)


def children(buf: bytes, parent: Tlv, depth: int = 0) -> Iterator[Tlv]:
    """The elements inside a constructed ``parent``, in order."""
    if not parent.constructed:
        raise MalformedMessage("expected a constructed BER element")
    pos = parent.content_start
    while pos < parent.content_end:
        child = read(buf, pos, parent.content_end, depth + 1)
        yield child
        pos = child.end


def expect(buf: bytes, pos: int, tag: int, what: str, limit: int | None = None) -> Tlv:
    """:func:`read`, insisting on the identifier octet ``tag`` (constructed or not)."""
    element = read(buf, pos, limit)
    if element.tag & ~0x20 != tag & ~0x20:
        raise MalformedMessage(f"{what}: expected tag {tag:#04x}, found {element.tag:#04x}")
    return element


def octets(buf: bytes, element: Tlv, depth: int = 0) -> list[memoryview]:
    """The value of an OCTET STRING (any tag): views of its primitive chunks, in order."""
    if depth > MAX_DEPTH:
        raise MalformedMessage("constructed OCTET STRING nested too deep")
    if not element.constructed:
        return [memoryview(buf)[element.content_start : element.content_end]]
    chunks: list[memoryview] = []
    for child in children(buf, element, depth):
        if child.number != OCTET_STRING:
            raise MalformedMessage("a constructed OCTET STRING may only hold OCTET STRINGs")
        chunks += octets(buf, child, depth + 1)
    return chunks


def element_bytes(buf: bytes, element: Tlv) -> bytes:
    """The whole encoding of ``element`` (to hand to asn1crypto)."""
    return bytes(buf[element.start : element.end])
