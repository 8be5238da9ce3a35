"""Byte-exact MIME plumbing for the S/MIME transforms (RFC 5322, RFC 2045/2046, RFC 8551 §3.1).

Python's :mod:`email` package re-serialises messages in ways that change bytes, which breaks
signatures; this module therefore splits header blocks and multipart bodies itself and keeps
the raw bytes of everything it does not have to change.  The only things it ever rewrites are
the ones RFC 8551 §3.1 asks for before signing: line endings become CRLF, and parts that are
not 7-bit safe (8bit/binary bodies, lines over 998 octets, raw non-ASCII header bytes) are
re-encoded to quoted-printable / base64 / RFC 2047 / RFC 2231.

The header and multipart parsers are only used on content-related structures; the email
package is used solely to *parse* header values (Content-Type parameters, addresses) and to
fold non-ASCII header values, never to serialise a message.
"""

from __future__ import annotations

import binascii
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gateway.smime.errors import MalformedMessage

CRLF = b"\r\n"
#: What a prepared entity is made of: its own bytes, or a view into the message.
Piece = bytes | memoryview
Buffer = bytes | bytearray | memoryview
_EOL = re.compile(rb"\r*\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_FOLD_POLICY = email.policy.default.clone(linesep="\r\n", utf8=False, max_line_length=76)
_MAX_DEPTH = 32
#: Content types whose bodies must never be re-encoded (their bytes are covered by a signature).
_SEALED = frozenset({"multipart/signed"})
_MESSAGE = frozenset({"message/rfc822", "message/global"})


@dataclass(frozen=True)
class Field:
    """One header field; ``raw`` holds every physical line of it joined with CRLF."""

    name: str
    raw: bytes

    @property
    def lname(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> str:
        """The unfolded field body, decoded as UTF-8 (undecodable bytes replaced)."""
        body = self.raw.split(b":", 1)[1]
        return _EOL.sub(b"", body).decode("utf-8", "replace").strip()

    @property
    def is_content(self) -> bool:
        return self.lname.startswith("content-")

    @classmethod
    def make(cls, name: str, value: str) -> Field:
        return cls(name, f"{name}: {value}".encode("ascii"))


@dataclass(frozen=True)
class Entity:
    """A message or body part: its header fields and its body bytes exactly as received."""

    fields: tuple[Field, ...]
    body: bytes

    def get(self, name: str) -> str | None:
        for field in self.fields:
            if field.lname == name.lower():
                return field.value
        return None

    def get_all(self, name: str) -> list[str]:
        return [f.value for f in self.fields if f.lname == name.lower()]

    def content_type(self, default: str = "text/plain") -> tuple[str, dict[str, str]]:
        return parse_content_type(self.get("Content-Type"), default)

    @property
    def transfer_encoding(self) -> str:
        return (self.get("Content-Transfer-Encoding") or "7bit").strip().lower()


def canonical(data: bytes) -> bytes:
    """Line endings to CRLF the way ``openssl cms`` canonicalises (CRs before an LF dropped)."""
    if b"\r\r" in data:
        return _EOL.sub(CRLF, data)
    if data.count(b"\n") == data.count(CRLF):
        return data
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


def _canonical_span(buf: bytes, start: int, end: int, *, seven_bit: bool = False) -> Piece:
    """``canonical(buf[start:end])`` — a view into ``buf`` (no copy) when nothing changes.

    Without a bare CR there is no CRCR and every CR is in a CRLF, so the span is canonical
    iff it has as many LFs as CRs: one regex scan and two single-byte counts.  ``seven_bit``
    says the caller already found the span 7-bit safe (so: no bare CR).
    """
    if (seven_bit or _BARE_CR.search(buf, start, end) is None) and buf.count(
        b"\n", start, end
    ) == buf.count(b"\r", start, end):
        return memoryview(buf)[start:end]
    return canonical(buf[start:end])


def split_message(data: bytes, *, require_fields: bool = True) -> Entity:
    """Split ``data`` into header fields and body; raise MalformedMessage on a bad header."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage("message must be bytes")
    data = bytes(data)
    fields, body_start = _parse_header(data, 0, len(data), require_fields)
    return Entity(fields, data[body_start:])


def split_view(data: Buffer, *, require_fields: bool = True) -> tuple[Entity, memoryview]:
    """:func:`split_message` without copying the body: (fields only entity, body view)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage("message must be bytes")
    data = bytes(data)
    fields, body_start = _parse_header(data, 0, len(data), require_fields)
    return Entity(fields, b""), memoryview(data)[body_start:]


def _parse_header(
    data: bytes, start: int, end: int, require_fields: bool
) -> tuple[tuple[Field, ...], int]:
    """The header fields of ``data[start:end]`` and the offset (in ``data``) of its body."""
    fields: list[Field] = []
    current: list[bytes] = []
    name = ""
    pos = start
    body_start = end
    while pos < end:
        eol = data.find(b"\n", pos, end)
        nxt = end if eol < 0 else eol + 1
        raw = data[pos:nxt]
        line = raw.rstrip(b"\r\n")
        if line == b"" and raw.endswith(b"\n"):
            body_start = nxt
            break
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
        else:
            match = _FIELD.match(line)
            if match is None:
                raise MalformedMessage(f"not a header field: {line[:60]!r}")
            if current:
                fields.append(Field(name, CRLF.join(current)))
            name = match.group(1).decode("ascii")
            current = [line]
        pos = nxt
    if current:
        fields.append(Field(name, CRLF.join(current)))
    if require_fields and not fields:
        raise MalformedMessage("message has no header fields")
    return tuple(fields), body_start


def parse_content_type(
    value: str | None, default: str = "text/plain"
) -> tuple[str, dict[str, str]]:
    """Return (lower-case type/subtype, parameters) of a Content-Type value."""
    if not value:
        return default, {}
    msg = email.message.Message()
    try:
        msg["Content-Type"] = value
        ctype = msg.get_content_type()
        params = {}
        for key, val in msg.get_params(failobj=[])[1:]:
            params[key.lower()] = email.utils.collapse_rfc2231_value(val)
    except (ValueError, TypeError, IndexError, LookupError, email.errors.MessageError) as exc:
        raise MalformedMessage(f"bad Content-Type: {value[:60]!r}") from exc
    if "/" not in value.split(";", 1)[0]:
        ctype = default
    return ctype, params


@dataclass(frozen=True)
class Multipart:
    preamble: bytes | None
    parts: tuple[bytes, ...]
    trailer: bytes  # bytes after the close delimiter's "--" (its EOL + epilogue)


def split_multipart(body: bytes, boundary: str) -> Multipart:
    """Split a multipart body on ``boundary`` keeping every part's bytes exact."""
    body = bytes(body)
    pre, parts, trailer = _multipart_spans(body, 0, len(body), boundary)
    return Multipart(
        None if pre is None else body[pre[0] : pre[1]],
        tuple(body[s:e] for s, e in parts),
        body[trailer[0] : trailer[1]],
    )


Span = tuple[int, int]
_DELIM_TAIL = re.compile(rb"(--)?[ \t]*\r*")


def _multipart_spans(
    buf: bytes, start: int, end: int, boundary: str
) -> tuple[Span | None, list[Span], Span]:
    """:func:`split_multipart` of ``buf[start:end]`` as (preamble, parts, trailer) offsets.

    A delimiter line is ``--boundary``, optionally ``--``, then blanks and CRs up to the end
    of the line, at the start of a line.  Found with ``bytes.find`` (fast) rather than a
    ``(?m)^`` regex, which the ``re`` engine tries at every position of the body.
    """
    delim = b"--" + boundary.encode("utf-8", "replace")
    preamble: Span | None = None
    segments: list[Span] = []
    position: int | None = None  # where the part after the last delimiter line starts
    for match_start, match_end, close in _delimiter_lines(buf, start, end, delim):
        if position is None:
            if match_start > start:
                preamble = (start, _drop_last_eol_at(buf, start, match_start))
        else:
            segments.append((position, _drop_last_eol_at(buf, position, match_start)))
        if close:
            if not segments:
                raise MalformedMessage("multipart body without parts")
            return preamble, segments, (min(match_start + len(delim) + 2, end), end)
        position = match_end + (1 if match_end < end and buf[match_end] == 0x0A else 0)
    if position is None:
        raise MalformedMessage("multipart body without its boundary")
    segments.append((position, end))
    return preamble, segments, (end, end)


def _delimiter_lines(
    buf: bytes, start: int, end: int, delim: bytes
) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is-close) of every delimiter line in ``buf[start:end]``, in order."""
    if b"\n" in delim:  # cannot happen with a sane boundary; keep the exact regex semantics
        pattern = re.compile(rb"(?m)^" + re.escape(delim) + rb"(--)?[ \t]*\r*$")
        for match in pattern.finditer(buf[start:end]):
            yield start + match.start(), start + match.end(), bool(match.group(1))
        return
    pos = start
    while True:
        found = buf.find(delim, pos, end)
        if found < 0:
            return
        if found == start or buf[found - 1] == 0x0A:
            tail = _DELIM_TAIL.match(buf, found + len(delim), end)
            assert tail is not None  # every element of the tail pattern is optional
            if tail.end() == end or buf[tail.end()] == 0x0A:
                yield found, tail.end(), bool(tail.group(1))
                pos = tail.end()
                continue
        pos = found + 1


def _drop_last_eol_at(buf: bytes, start: int, end: int) -> int:
    """End offset of ``_drop_last_eol(buf[start:end])``."""
    if end - start >= 2 and buf[end - 2 : end] == CRLF:
        return end - 2
    if end > start and buf[end - 1] == 0x0A:
        return end - 1
    return end


def _drop_last_eol(chunk: bytes) -> bytes:
    if chunk.endswith(b"\r\n"):
        return chunk[:-2]
    if chunk.endswith(b"\n"):
        return chunk[:-1]
    return chunk


def join_multipart(multipart: Multipart, boundary: str, parts: Sequence[bytes]) -> bytes:
    delim = b"--" + boundary.encode("ascii")
    out = [] if multipart.preamble is None else [multipart.preamble, CRLF]
    for part in parts:
        out += [delim, CRLF, part, CRLF]
    out += [delim, b"--", multipart.trailer]
    return b"".join(out)


def decode_body(body: Buffer, cte: str) -> bytes:
    """Undo a Content-Transfer-Encoding (lenient about whitespace, strict about padding)."""
    try:
        if cte == "base64":
            # Non-strict a2b_base64 skips whitespace (like every non-alphabet byte) itself,
            # so no split/join copy of the body is needed.
            return binascii.a2b_base64(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"bad {cte} body") from exc
    return bytes(body)


def replace_field(fields: Iterable[Field], new: Field, *, after: str | None = None) -> list[Field]:
    """Drop every field named like ``new`` and put ``new`` where the first one was."""
    out: list[Field] = []
    placed = False
    for field in fields:
        if field.lname == new.lname:
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(field)
        if not placed and after is not None and field.lname == after.lower():
            out.append(new)
            placed = True
    if not placed:
        out.append(new)
    return out


def message_head(outer: Iterable[Field], content: Iterable[Field]) -> bytes:
    """Outer fields + MIME-Version + content fields + blank line, all CRLF."""
    head = b"".join(canonical(f.raw) + CRLF for f in outer)
    head += b"MIME-Version: 1.0\r\n"
    head += b"".join(canonical(f.raw) + CRLF for f in content)
    return head + CRLF


def build_message(outer: Iterable[Field], content: Iterable[Field], body: bytes) -> bytes:
    """Outer fields + MIME-Version + content fields + blank line + body, all CRLF."""
    return b"".join([message_head(outer, content), body])
