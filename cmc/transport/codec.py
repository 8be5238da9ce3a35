"""The bytes of RFC 5273 §3 over HTTP: request bodies, media types, response decoding.

Pure functions, no I/O; :mod:`cmc.transport.http` puts them on the wire.

RFC 5273 §3 (Table 1, as amended by RFC 6402 §5):

==================== ==================================================
Simple PKI Request   ``application/pkcs10``
Full PKI Request     ``application/pkcs7-mime; smime-type=CMC-request``
Simple PKI Response  ``application/pkcs7-mime; smime-type=certs-only``
Full PKI Response    ``application/pkcs7-mime; smime-type=CMC-response``
==================== ==================================================

The RFC wants binary bodies and POST.  Deployed servers differ, so the reader is lenient:
media types and parameters compare case-insensitively, a missing ``smime-type`` is accepted,
the legacy ``application/x-pkcs7-mime`` too, and base64 (with or without a
``Content-Transfer-Encoding: base64`` header) or PEM bodies are recognised and decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import quote, urlsplit

from cmc.transport.errors import UndecodableResponse, UnexpectedContentType

SIMPLE_REQUEST_TYPE = "application/pkcs10"
FULL_REQUEST_TYPE = "application/pkcs7-mime; smime-type=CMC-request"
RESPONSE_ACCEPT = "application/pkcs7-mime"

RESPONSE_MEDIA_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
RESPONSE_SMIME_TYPES = frozenset({"cmc-response", "certs-only"})
IDENTITY_TRANSFER_ENCODINGS = frozenset({"", "binary", "8bit", "7bit"})

_PEM_BLOCK = re.compile(rb"-----BEGIN [^-\r\n]*-----(.*?)-----END [^-\r\n]*-----", re.DOTALL)
_MIME_LINE = 76


def request_content_type(*, full: bool) -> str:
    return FULL_REQUEST_TYPE if full else SIMPLE_REQUEST_TYPE


def encode_request_body(der: bytes, *, base64_text: bool) -> bytes:
    """The POST body: the DER itself, or base64 in RFC 2045 lines (76 characters, CRLF)."""
    if not base64_text:
        return der
    text = base64.b64encode(der)
    lines = [text[i : i + _MIME_LINE] for i in range(0, len(text), _MIME_LINE)]
    return b"\r\n".join(lines) + b"\r\n"


def get_request_url(url: str, der: bytes, parameter: str) -> str:
    """The URL of a GET request: the DER as base64 (RFC 4648 §4) in query ``parameter``.

    RFC 5273 §3 has clients POST; GET is a vendor convention without a standard form.  This
    one follows the only widespread precedent for CMS in a query (SCEP's ``message=``): the
    standard alphabet, percent-encoded, appended to any query the URL already carries.
    """
    separator = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    value = quote(base64.b64encode(der).decode("ascii"), safe="")
    return f"{url}{separator}{quote(parameter, safe='')}={value}"


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``("type/subtype", {param: value})``, everything lower-cased, quotes and spaces dropped."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        name, eq, raw = part.partition("=")
        if not eq:
            continue
        params[name.strip().lower()] = raw.strip().strip('"').strip().lower()
    return media.strip().lower(), params


def check_response_content_type(value: str | None, body: bytes = b"") -> None:
    """Raise :class:`UnexpectedContentType` unless ``value`` announces a CMC response."""
    if value is None or not value.strip():
        raise UnexpectedContentType(
            f"the CA answered without a Content-Type{_described(body)}", content_type=None
        )
    media, params = parse_content_type(value)
    smime_type = params.get("smime-type")
    if media not in RESPONSE_MEDIA_TYPES or (
        smime_type is not None and smime_type not in RESPONSE_SMIME_TYPES
    ):
        raise UnexpectedContentType(
            f"the CA answered with Content-Type {value.strip()!r}, not a CMC response "
            f"(application/pkcs7-mime; smime-type=CMC-response or certs-only){_described(body)}",
            content_type=value.strip(),
        )


def decode_response_body(body: bytes, transfer_encoding: str | None = None) -> bytes:
    """The DER of a response body that is DER, base64 of DER or PEM of DER.

    A body is taken as DER when it is exactly one DER/BER SEQUENCE; anything else must be
    base64 (whitespace ignored) or a PEM block whose payload is such a SEQUENCE.
    """
    encoding = (transfer_encoding or "").strip().lower()
    if encoding not in IDENTITY_TRANSFER_ENCODINGS and encoding != "base64":
        raise UndecodableResponse(f"the CA used Content-Transfer-Encoding {encoding!r}")
    if is_der_sequence(body):
        return body
    text = body.strip()
    if not text:
        raise UndecodableResponse("the CA answered with an empty body")
    pem = _PEM_BLOCK.search(text)
    if pem is not None:
        text = b"\n".join(line for line in pem.group(1).splitlines() if b":" not in line)
    try:
        der = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise UndecodableResponse(
            f"the CA's answer is neither DER nor base64{_described(body)}"
        ) from None
    if not is_der_sequence(der):
        raise UndecodableResponse("the CA's base64 answer does not decode to a DER SEQUENCE")
    return der


def is_der_sequence(data: bytes) -> bool:
    """True when ``data`` is exactly one SEQUENCE TLV (definite, or indefinite BER length)."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return 2 + first == len(data)
    if first == 0x80:
        return len(data) >= 4 and data.endswith(b"\x00\x00")
    count = first & 0x7F
    if count > 4 or len(data) < 2 + count:
        return False
    length = int.from_bytes(data[2 : 2 + count], "big")
    return 2 + count + length == len(data)


def snippet(body: bytes, limit: int = 120) -> str:
    """A printable, single-line beginning of ``body`` for error messages."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _described(body: bytes) -> str:
    shown = snippet(body)
    return f"; body begins {shown!r}" if shown else ""
