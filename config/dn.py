"""Distinguished names as administrators write them: RFC 4514 and the slash form.

Two spellings are accepted and both give a :class:`cryptography.x509.Name`:

``CN=Alice,O=Example AG,C=CH`` (RFC 4514)
    RDNs separated by ``,`` (or ``;``), multi-valued RDNs joined with ``+``, most specific
    first as RFC 4514 writes it (so the last one, ``C=CH``, is the first RDN in DER).
    Blanks around ``,``/``+``/``=`` are ignored as Java's RFC 2253 parser ignores them;
    ``\\,``/``\\+``/``\\XX`` escapes and ``"quoted"`` values are understood.
``/CN=Secure Mail: Gateway Certificate /O=Organisation name/ C=CH`` (slash, OpenSSL one-line)
    components separated by ``/`` (``\\/`` for a literal slash), blanks around separators
    stripped.  OpenSSL writes these in DER order (``/C=CH/O=x/CN=y``); SwissSign's and
    Totemo's examples write them most specific first.  So the order is decided by the ends:
    when the first component is more specific than the last (rank below), the string is
    read most-specific-first and reversed into DER order.  Ranks: C, DC 0; ST, L 1; O 2;
    OU 3; everything else (CN, emailAddress, serialNumber, ...) 4.

Attribute names are case-insensitive: CN, C, O, OU, L, ST (S), STREET, DC, UID, E / EMAIL /
EMAILADDRESS, SERIALNUMBER, SN (surname), GN / GIVENNAME, T / TITLE, PSEUDONYM,
ORGANIZATIONIDENTIFIER, POSTALCODE, or a dotted OID.  Values must not be empty or hold
control characters; C is two letters (upper-cased).  Nothing but DnError leaves this module.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from config.errors import DnError

MAX_DN_LENGTH = 4096

ATTRIBUTES: dict[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "C": NameOID.COUNTRY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "SN": NameOID.SURNAME,
    "SURNAME": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "ORGANIZATIONIDENTIFIER": NameOID.ORGANIZATION_IDENTIFIER,
    "POSTALCODE": NameOID.POSTAL_CODE,
}

#: Names used when a Name is written back (RFC 4514 string).
SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.EMAIL_ADDRESS: "E",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "T",
    NameOID.PSEUDONYM: "PSEUDONYM",
    NameOID.ORGANIZATION_IDENTIFIER: "ORGANIZATIONIDENTIFIER",
    NameOID.POSTAL_CODE: "POSTALCODE",
}

_RANKS = {
    NameOID.COUNTRY_NAME: 0,
    NameOID.DOMAIN_COMPONENT: 0,
    NameOID.STATE_OR_PROVINCE_NAME: 1,
    NameOID.LOCALITY_NAME: 1,
    NameOID.ORGANIZATION_NAME: 2,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 3,
}
_OID_RE = re.compile(r"^[0-2](?:\.(?:0|[1-9][0-9]{0,9})){1,30}$")
_PRINTABLE_RE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]*$")
_PRINTABLE = {NameOID.COUNTRY_NAME, NameOID.SERIAL_NUMBER, NameOID.DN_QUALIFIER}
_IA5 = {NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT}
_SPECIALS = ',+"\\<>;=/# '


def format_dn(name: x509.Name) -> str:
    """The RFC 4514 string of ``name`` (most specific first), with the names above."""
    return name.rfc4514_string(SHORT_NAMES)


def attribute_label(oid: ObjectIdentifier) -> str:
    return SHORT_NAMES.get(oid) or next(
        (label for label, known in ATTRIBUTES.items() if known == oid), oid.dotted_string
    )


def _oid(label: str) -> ObjectIdentifier:
    name = label.strip()
    if not name:
        raise DnError("an attribute has no type before '='")
    known = ATTRIBUTES.get(name.upper())
    if known is not None:
        return known
    if _OID_RE.match(name):
        try:
            return ObjectIdentifier(name)
        except ValueError:
            pass
    raise DnError(f"unknown attribute type {name[:40]!r}")


def make_attribute(oid: ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    """One attribute, checked for what certificates allow."""
    label = attribute_label(oid)
    if not value:
        raise DnError(f"{label} is empty")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise DnError(f"{label} holds a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DnError(f"{label} is not valid Unicode text") from None
    if oid == NameOID.COUNTRY_NAME:
        if not re.fullmatch(r"[A-Za-z]{2}", value):
            raise DnError(f"C must be a two-letter country code, not {value[:40]!r}")
        value = value.upper()
    if oid in _PRINTABLE and not _PRINTABLE_RE.match(value):
        raise DnError(f"{label} may only hold PrintableString characters")
    if oid in _IA5 and not value.isascii():
        raise DnError(f"{label} may only hold ASCII characters")
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:
        raise DnError(f"{label}: {exc}") from None


def _rdn(attributes: list[x509.NameAttribute[str]]) -> x509.RelativeDistinguishedName:
    try:
        return x509.RelativeDistinguishedName(attributes)
    except ValueError as exc:
        raise DnError(f"invalid multi-valued RDN: {exc}") from None


def parse_dn(text: str) -> x509.Name:
    """A Name from either spelling (see the module doc); DnError when it is not one."""
    source = text.strip()
    if not source:
        raise DnError("the DN is empty")
    if len(source) > MAX_DN_LENGTH:
        raise DnError(f"the DN is longer than {MAX_DN_LENGTH} characters")
    if source.startswith("/"):
        return _parse_slash(source)
    return _parse_rfc4514(source)


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, index = [], "", 0
    while index < len(text):
        ch = text[index]
        if ch == "\\" and index + 1 < len(text):
            current += text[index : index + 2]
            index += 2
            continue
        if ch == separator:
            parts.append(current)
            current = ""
        else:
            current += ch
        index += 1
    parts.append(current)
    return parts


def _unescape_simple(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _parse_slash(source: str) -> x509.Name:
    components = _split_unescaped(source[1:], "/")
    if components and not components[-1].strip():
        components.pop()  # one trailing slash is harmless
    pairs: list[tuple[ObjectIdentifier, str]] = []
    for component in components:
        if not component.strip():
            raise DnError("empty component between two '/'")
        pieces = _split_unescaped(component, "=")
        if len(pieces) < 2:
            raise DnError(f"component {component.strip()[:40]!r} has no '='")
        oid = _oid(_unescape_simple(pieces[0]))
        value = _unescape_simple("=".join(pieces[1:])).strip()
        pairs.append((oid, value))
    if not pairs:
        raise DnError("the DN has no components")
    if _RANKS.get(pairs[0][0], 4) > _RANKS.get(pairs[-1][0], 4):
        pairs.reverse()  # written most specific first (SwissSign, Totemo)
    return x509.Name([_rdn([make_attribute(oid, value)]) for oid, value in pairs])


class _Rfc4514Parser:
    """RFC 4514 (and RFC 2253's blanks, quotes and ';') into a list of RDNs."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def parse(self) -> x509.Name:
        rdns: list[x509.RelativeDistinguishedName] = []
        while True:
            attributes = [self.attribute()]
            while self.peek() == "+":
                self.pos += 1
                attributes.append(self.attribute())
            rdns.append(_rdn(attributes))
            if self.peek() in (",", ";"):
                self.pos += 1
                continue
            if self.peek():
                raise DnError(f"unexpected {self.peek()!r} at position {self.pos + 1}")
            break
        rdns.reverse()  # RFC 4514 writes the last RDN first
        return x509.Name(rdns)

    def attribute(self) -> x509.NameAttribute[str]:
        self.skip_blanks()
        start = self.pos
        while self.peek() and self.peek() not in "=,+;":
            self.pos += 1
        if self.peek() != "=":
            raise DnError(f"attribute {self.text[start : self.pos].strip()[:40]!r} has no '='")
        oid = _oid(self.text[start : self.pos])
        self.pos += 1
        self.skip_blanks()
        return make_attribute(oid, self.value())

    def value(self) -> str:
        if self.peek() == "#":
            raise DnError("BER-encoded values (#...) are not supported: write the text")
        if self.peek() == '"':
            return self.quoted()
        raw = bytearray()
        kept = 0  # length of raw up to the last escaped or non-blank character
        while self.peek() and self.peek() not in ",+;":
            ch = self.peek()
            if ch == "\\":
                raw += self.escape()
                kept = len(raw)
                continue
            if ch in '"<>':
                raise DnError(f"{ch!r} must be escaped in a DN value")
            raw += ch.encode("utf-8", "surrogatepass")
            self.pos += 1
            if ch != " ":
                kept = len(raw)
        return self.decode(bytes(raw[:kept]))

    def quoted(self) -> str:
        self.pos += 1
        raw = bytearray()
        while self.peek() != '"':
            if not self.peek():
                raise DnError("unterminated quoted value")
            if self.peek() == "\\":
                raw += self.escape()
                continue
            raw += self.peek().encode("utf-8", "surrogatepass")
            self.pos += 1
        self.pos += 1
        self.skip_blanks()
        return self.decode(bytes(raw))

    def escape(self) -> bytes:
        pair = self.text[self.pos + 1 : self.pos + 3]
        if re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
            self.pos += 3
            return bytes.fromhex(pair)
        if pair[:1] and pair[0] in _SPECIALS:
            self.pos += 2
            return pair[0].encode()
        raise DnError(f"invalid escape at position {self.pos + 1}")

    @staticmethod
    def decode(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DnError("escaped bytes are not UTF-8") from None


def _parse_rfc4514(source: str) -> x509.Name:
    return _Rfc4514Parser(source).parse()
