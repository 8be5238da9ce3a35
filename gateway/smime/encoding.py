"""Content-transfer encoding of MIME entities, and their preparation for signing (RFC 8551 §3.1).

Before a signature, line endings become CRLF and parts that are not 7-bit safe (8bit/binary
bodies, lines over 998 octets, raw non-ASCII header bytes) are re-encoded to quoted-printable /
base64 / RFC 2047 / RFC 2231; everything else keeps its bytes (views into the message, not
copies).  The byte-exact parsing lives in :mod:`gateway.smime.mime`.
"""

from __future__ import annotations

import binascii
import codecs
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import io
import struct
from collections.abc import Sequence

from gateway.smime.errors import MalformedMessage
from gateway.smime.mime import (
    _BARE_CR,
    _EOL,
    _FOLD_POLICY,
    _MAX_DEPTH,
    _MESSAGE,
    _SEALED,
    CRLF,
    Buffer,
    Entity,
    Field,
    Piece,
    _canonical_span,
    _multipart_spans,
    _parse_header,
    canonical,
    decode_body,
    replace_field,
    split_message,
)


def b64_size(length: int) -> int:
    """Length of :func:`b64_lines` output for ``length`` input bytes."""
    full, rest = divmod(length, 57)
    return full * 78 + ((rest + 2) // 3 * 4 + 2 if rest else 0)


def b64_lines(data: Buffer) -> bytes:
    """Base64 in 76-character CRLF-terminated lines (RFC 2045 §6.8)."""
    out = Output(b64_size(memoryview(data).nbytes))
    lines = Base64Lines(out)
    lines.write(data)
    lines.close()
    return out.value()


class Output:
    """A ``bytes`` result filled in place; ``size`` is its length, or an upper bound of it.

    ``io.BytesIO`` hands its internal buffer out from ``getvalue()`` without copying when no
    view of it is alive (and shrinks it in place if it was sized too large), so a large result
    costs its own size once — not once more for a final ``bytes(bytearray)`` or a
    ``b"".join`` of all its pieces.
    """

    def __init__(self, size: int) -> None:
        self.size = 0
        self.pos = 0
        self._io = io.BytesIO()
        self._view: memoryview | None = None
        self._reserve(size)

    def _reserve(self, size: int) -> None:
        if self._view is not None:
            self._view.release()
        if size > self.size:
            self._io.seek(size - 1)
            self._io.write(b"\0")
            self.size = size
        self._view = self._io.getbuffer()

    def write(self, data: Buffer) -> None:
        n = memoryview(data).nbytes
        end = self.pos + n
        if end > self.size:  # the size was a bad estimate: grow (may copy)
            self._reserve(end)
        assert self._view is not None
        self._view[self.pos : end] = data
        self.pos = end

    def region(self, start: int, end: int) -> memoryview:
        """A view of bytes already written; release it (``with``) before :meth:`value`."""
        assert self._view is not None and 0 <= start <= end <= self.pos
        return self._view[start:end]

    def value(self) -> bytes:
        if self._view is None:
            raise ValueError("output already taken")
        self._view.release()
        self._view = None
        if self.pos < self.size:
            self._io.truncate(self.pos)
        value = self._io.getvalue()
        self._io.close()
        return value


class Base64Lines:
    """Streaming :func:`b64_lines`: ``write`` any amount, ``close`` once, into an :class:`Output`.

    Whole blocks of 76-character lines are encoded with one ``b2a_base64`` call each and cut
    into lines by a precompiled ``struct`` format (C speed, no per-line Python loop).
    """

    _LINES = 4096  # lines per block: 233,472 input bytes
    _BLOCK = 57 * _LINES
    _CUT = struct.Struct("76s" * _LINES)

    def __init__(self, out: Output) -> None:
        self._out = out
        self._stage = bytearray()  # less than a block, waiting for more

    def write(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        pos, n = 0, len(view)
        if self._stage:
            pos = min(n, self._BLOCK - len(self._stage))
            self._stage += view[:pos]
            if len(self._stage) < self._BLOCK:
                return
            self._emit(self._stage)
            self._stage.clear()
        while n - pos >= self._BLOCK:
            self._emit(view[pos : pos + self._BLOCK])
            pos += self._BLOCK
        if pos < n:
            self._stage += view[pos:]

    def close(self) -> None:
        if not self._stage:
            return
        encoded = binascii.b2a_base64(self._stage, newline=False)
        self._stage.clear()
        lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
        self._out.write(CRLF.join(lines))
        self._out.write(CRLF)

    def _emit(self, block: Buffer) -> None:
        encoded = binascii.b2a_base64(block, newline=False)
        self._out.write(CRLF.join(self._CUT.unpack(encoded)))
        self._out.write(CRLF)


_CHUNK = 1 << 20


def is_7bit_safe(data: bytes) -> bool:
    return _is_7bit_safe_span(data, 0, len(data))


def _is_7bit_safe_span(buf: bytes, start: int, end: int) -> bool:
    """``is_7bit_safe(buf[start:end])`` without copying the span."""
    if start == 0 and end == len(buf):
        if not buf.isascii():
            return False
    elif not all(buf[i : min(i + _CHUNK, end)].isascii() for i in range(start, end, _CHUNK)):
        return False
    if buf.find(b"\x00", start, end) >= 0:
        return False
    if _BARE_CR.search(buf, start, end) is not None:
        return False
    # Every CR now ends a line, so "<= 998 octets before CRLF" is "<= 999 before LF".
    return _lines_fit(buf, start, end, 999)


def _lines_fit(buf: bytes, start: int, end: int, limit: int) -> bool:
    """No line of ``buf[start:end]`` (split on LF, its CR counted) is longer than ``limit``.

    Jumps to the last LF of each window of ``limit + 1`` bytes: a few iterations per
    kilobyte instead of splitting the data into one object per line.
    """
    pos = start
    while end - pos > limit:
        newline = buf.rfind(b"\n", pos, pos + limit + 1)
        if newline < 0:
            return False
        pos = newline + 1
    return True


_TEXT_SAFE = bytes(range(32, 127)) + b"\t\n\r"


def _encode_text(payload: bytes) -> tuple[bytes, str]:
    unsafe = len(payload.translate(None, _TEXT_SAFE))
    if unsafe * 3 > len(payload):
        return b64_lines(payload), "base64"
    if b"\r\r" in payload:
        text = _EOL.sub(b"\n", payload)
    else:
        text = payload.replace(CRLF, b"\n")
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


def prepare_entity(entity: Entity, *, default_type: str = "text/plain", depth: int = 0) -> bytes:
    """Serialise ``entity`` as canonical (CRLF), 7-bit safe bytes — what gets signed."""
    body = entity.body if isinstance(entity.body, bytes) else bytes(entity.body)
    pieces: list[Piece] = []
    _prepare(entity.fields, body, 0, len(body), default_type, depth, pieces)
    return b"".join(pieces)


def _prepare(
    original: Sequence[Field],
    buf: bytes,
    start: int,
    end: int,
    default_type: str,
    depth: int,
    out: list[Piece],
) -> None:
    """Append :func:`prepare_entity` of (``original`` fields, body ``buf[start:end]``) to ``out``.

    Bodies that stay as they are go in as views of ``buf``: preparing a message copies only
    what it re-encodes, and the caller joins (or encrypts) the pieces in one pass.
    """
    if depth > _MAX_DEPTH:
        raise MalformedMessage("MIME nesting too deep")
    fields = [seven_bit_field(f) for f in original]
    entity = Entity(tuple(original), b"")  # only its header fields are looked at
    ctype, params = entity.content_type(default_type)
    cte = entity.transfer_encoding
    body: list[Piece] = []
    if ctype in _SEALED:
        body.append(_canonical_span(buf, start, end))
    elif ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise MalformedMessage(f"{ctype} without boundary")
        preamble, parts, trailer = _multipart_spans(buf, start, end, boundary)
        inner_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        prepared: list[list[Piece]] = []
        for part_start, part_end in parts:
            part_fields, part_body = _parse_header(buf, part_start, part_end, False)
            prepared.append([])
            _prepare(part_fields, buf, part_body, part_end, inner_default, depth + 1, prepared[-1])
        if preamble is not None:
            body += [_seven_bit_text(buf[preamble[0] : preamble[1]]), CRLF]
        delim = b"--" + boundary.encode("ascii")
        for part in prepared:
            body += [delim, CRLF, *part, CRLF]
        body += [delim, b"--", _seven_bit_text(buf[trailer[0] : trailer[1]])]
        if cte in ("8bit", "binary"):
            fields = replace_field(fields, Field.make("Content-Transfer-Encoding", "7bit"))
    elif ctype in _MESSAGE and cte not in ("base64", "quoted-printable"):
        if _is_7bit_safe_span(buf, start, end) and cte != "binary":
            body.append(_canonical_span(buf, start, end, seven_bit=True))
        else:
            nested_fields, nested_body = _parse_header(buf, start, end, False)
            _prepare(nested_fields, buf, nested_body, end, "text/plain", depth + 1, body)
            if cte != "7bit":
                fields = replace_field(fields, Field.make("Content-Transfer-Encoding", "7bit"))
    elif cte in ("base64", "quoted-printable", "7bit", "8bit") and _is_7bit_safe_span(
        buf, start, end
    ):
        body.append(_canonical_span(buf, start, end, seven_bit=True))
    else:
        payload = decode_body(memoryview(buf)[start:end], cte)
        new_cte = "base64"
        if ctype.startswith("text/"):
            encoded, new_cte = _encode_text(payload)
        else:
            encoded = b64_lines(payload)
        del payload
        body.append(encoded)
        new = Field.make("Content-Transfer-Encoding", new_cte)
        fields = replace_field(fields, new, after="Content-Type")
    head = b"".join(f.raw + CRLF for f in fields)
    out.append(canonical(head) + CRLF)
    out += body


def _seven_bit_text(data: bytes) -> bytes:
    """Preamble/epilogue are never displayed; keep them only if 7-bit safe."""
    return canonical(data) if is_7bit_safe(data) else b""


def default_content_type(body: Buffer) -> Field:
    return _default_content_type_span(body, 0, memoryview(body).nbytes)


def _default_content_type_span(buf: Buffer, start: int, end: int) -> Field:
    """:func:`default_content_type` of ``buf[start:end]``, checked in chunks (no full copy)."""
    chunks = [memoryview(buf)[i : min(i + _CHUNK, end)] for i in range(start, end, _CHUNK)]
    if all(bytes(chunk).isascii() for chunk in chunks):
        charset = "us-ascii"
    else:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            for chunk in chunks:
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
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
    outer, content, _ = _outer_and_content(entity.fields, entity.body, 0)
    return outer, Entity(tuple(content), entity.body)


def _outer_and_content(
    fields: Sequence[Field], buf: bytes, body_start: int
) -> tuple[list[Field], list[Field], bool]:
    """(outer fields, content fields, whether a Content-Type had to be added)."""
    outer = [f for f in fields if not f.is_content and f.lname != "mime-version"]
    content = [f for f in fields if f.is_content]
    added = not any(f.lname == "content-type" for f in content)
    if added:
        content.insert(0, _default_content_type_span(buf, body_start, len(buf)))
    return outer, content, added


def prepare_message(
    message: Buffer, *, protect_headers: bool = False
) -> tuple[list[Field], list[Piece]]:
    """(outer fields, pieces of the canonical 7-bit MIME entity to protect) of ``message``.

    ``b"".join`` of the pieces is what :func:`gateway.smime.sign.inner_entity` returns; the
    pieces that are unchanged are views into ``message``, so nothing large is copied here.
    """
    if not isinstance(message, bytes | bytearray | memoryview):
        raise MalformedMessage("message must be bytes")
    data = bytes(message)
    fields, body_start = _parse_header(data, 0, len(data), True)
    outer, content, added = _outer_and_content(fields, data, body_start)
    pieces: list[Piece] = []
    if not protect_headers:
        _prepare(content, data, body_start, len(data), "text/plain", 0, pieces)
        return outer, pieces
    full = [*fields, content[0]] if added else list(fields)
    pieces.append(b"Content-Type: message/rfc822\r\n\r\n")
    _prepare(full, data, body_start, len(data), "text/plain", 0, pieces)
    return outer, pieces
