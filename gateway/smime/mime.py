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

import base64
import binascii
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.smime.errors import MalformedMessage

CRLF = b"\r\n"
_EOL = re.compile(rb"\r*\n")
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


def split_message(data: bytes, *, require_fields: bool = True) -> Entity:
    """Split ``data`` into header fields and body; raise MalformedMessage on a bad header."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage("message must be bytes")
    data = bytes(data)
    fields: list[Field] = []
    current: list[bytes] = []
    name = ""
    pos = 0
    body_start = len(data)
    while pos < len(data):
        end = data.find(b"\n", pos)
        nxt = len(data) if end < 0 else end + 1
        line = data[pos:nxt].rstrip(b"\r\n")
        if line == b"" and nxt - pos > 0 and data[pos:nxt].endswith(b"\n"):
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
    return Entity(tuple(fields), data[body_start:])


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
    delim = b"--" + boundary.encode("utf-8", "replace")
    pattern = re.compile(rb"(?m)^" + re.escape(delim) + rb"(--)?[ \t]*\r*$")
    preamble: bytes | None = None
    segments: list[bytes] = []
    position: int | None = None  # where the part after the last delimiter line starts
    for match in pattern.finditer(body):
        if position is None:
            preamble = _drop_last_eol(body[: match.start()]) if match.start() else None
        else:
            segments.append(_drop_last_eol(body[position : match.start()]))
        if match.group(1):
            if not segments:
                raise MalformedMessage("multipart body without parts")
            return Multipart(preamble, tuple(segments), body[match.start() + len(delim) + 2 :])
        position = match.end() + (1 if body[match.end() : match.end() + 1] == b"\n" else 0)
    if position is None:
        raise MalformedMessage("multipart body without its boundary")
    segments.append(body[position:])
    return Multipart(preamble, tuple(segments), b"")


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


def decode_body(body: bytes, cte: str) -> bytes:
    """Undo a Content-Transfer-Encoding (lenient about whitespace, strict about padding)."""
    try:
        if cte == "base64":
            return binascii.a2b_base64(b"".join(body.split()))
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessage(f"bad {cte} body") from exc
    return body


def b64_lines(data: bytes) -> bytes:
    """Base64 in 76-character CRLF-terminated lines (RFC 2045 §6.8)."""
    encoded = base64.b64encode(data)
    return b"".join(encoded[i : i + 76] + CRLF for i in range(0, len(encoded), 76))


def is_7bit_safe(data: bytes) -> bool:
    if not data.isascii() or b"\x00" in data:
        return False
    if re.search(rb"\r(?!\n)", data):
        return False
    return max(map(len, data.split(b"\n"))) <= 999 or all(
        len(line.rstrip(b"\r")) <= 998 for line in data.split(b"\n")
    )


def _encode_text(payload: bytes) -> tuple[bytes, str]:
    unsafe = sum(1 for b in payload if b > 126 or (b < 32 and b not in (9, 10, 13)))
    if unsafe * 3 > len(payload):
        return b64_lines(payload), "base64"
    text = _EOL.sub(b"\n", payload)
    return canonical(binascii.b2a_qp(text, istext=True)), "quoted-printable"


def seven_bit_field(field: Field) -> Field:
    """RFC 2047/2231-encode a header field whose raw bytes are not ASCII."""
    if field.raw.isascii():
        return field
    raw = field.raw.split(b":", 1)[1]
    raw = _EOL.sub(b"", raw).strip()
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        value = raw.decode("latin-1")
    try:
        folded = _FOLD_POLICY.header_factory(field.name, value).fold(policy=_FOLD_POLICY)
        out = folded.encode("ascii").rstrip(b"\r\n")
    except (ValueError, TypeError, IndexError, LookupError, email.errors.MessageError):
        encoded = email.header.Header(value, "utf-8", header_name=field.name).encode("\r\n")
        out = f"{field.name}: {encoded}".encode("ascii")
    return Field(field.name, out)


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


def prepare_entity(entity: Entity, *, default_type: str = "text/plain", depth: int = 0) -> bytes:
    """Serialise ``entity`` as canonical (CRLF), 7-bit safe bytes — what gets signed."""
    if depth > _MAX_DEPTH:
        raise MalformedMessage("MIME nesting too deep")
    fields = [seven_bit_field(f) for f in entity.fields]
    ctype, params = entity.content_type(default_type)
    cte = entity.transfer_encoding
    body: bytes
    if ctype in _SEALED:
        body = canonical(entity.body)
    elif ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise MalformedMessage(f"{ctype} without boundary")
        multipart = split_multipart(entity.body, boundary)
        inner_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        parts = [
            prepare_entity(
                split_message(part, require_fields=False),
                default_type=inner_default,
                depth=depth + 1,
            )
            for part in multipart.parts
        ]
        pre = None if multipart.preamble is None else _seven_bit_text(multipart.preamble)
        multipart = Multipart(pre, (), _seven_bit_text(multipart.trailer))
        body = join_multipart(multipart, boundary, parts)
        if cte in ("8bit", "binary"):
            fields = replace_field(fields, Field.make("Content-Transfer-Encoding", "7bit"))
    elif ctype in _MESSAGE and cte not in ("base64", "quoted-printable"):
        if is_7bit_safe(entity.body) and cte != "binary":
            body = canonical(entity.body)
        else:
            nested = split_message(entity.body, require_fields=False)
            body = prepare_entity(nested, depth=depth + 1)
            if cte != "7bit":
                fields = replace_field(fields, Field.make("Content-Transfer-Encoding", "7bit"))
    elif cte in ("base64", "quoted-printable") and is_7bit_safe(entity.body):
        body = canonical(entity.body)
    elif cte in ("7bit", "8bit") and is_7bit_safe(entity.body):
        body = canonical(entity.body)
    else:
        payload = decode_body(entity.body, cte)
        if ctype.startswith("text/"):
            body, new_cte = _encode_text(payload)
        else:
            body, new_cte = b64_lines(payload), "base64"
        new = Field.make("Content-Transfer-Encoding", new_cte)
        fields = replace_field(fields, new, after="Content-Type")
    head = b"".join(f.raw + CRLF for f in fields)
    return canonical(head) + CRLF + body


def _seven_bit_text(data: bytes) -> bytes:
    """Preamble/epilogue are never displayed; keep them only if 7-bit safe."""
    return canonical(data) if is_7bit_safe(data) else b""


def default_content_type(body: bytes) -> Field:
    if body.isascii():
        charset = "us-ascii"
    else:
        try:
            body.decode("utf-8")
            charset = "utf-8"
        except UnicodeDecodeError:
            charset = "unknown-8bit"
    return Field.make("Content-Type", f"text/plain; charset={charset}")


def split_outer(message: bytes) -> tuple[list[Field], Entity]:
    """Split a message into its outer (non-MIME) fields and the MIME entity to protect.

    The entity keeps the ``Content-*`` fields (a ``text/plain`` Content-Type is added if
    there was none); MIME-Version is dropped from both — builders write their own.
    """
    entity = split_message(message, require_fields=True)
    outer = [f for f in entity.fields if not f.is_content and f.lname != "mime-version"]
    content = [f for f in entity.fields if f.is_content]
    if not any(f.lname == "content-type" for f in content):
        content.insert(0, default_content_type(entity.body))
    return outer, Entity(tuple(content), entity.body)


def build_message(outer: Iterable[Field], content: Iterable[Field], body: bytes) -> bytes:
    """Outer fields + MIME-Version + content fields + blank line + body, all CRLF."""
    head = b"".join(canonical(f.raw) + CRLF for f in outer)
    head += b"MIME-Version: 1.0\r\n"
    head += b"".join(canonical(f.raw) + CRLF for f in content)
    return head + CRLF + body
