"""From ``security.pkiConnection.certSubjectDN`` to one user's subject and SAN.

The template is a DN (either spelling, :mod:`config.dn`).  For a user with address ``email``
and optional ``display_name``:

* every emailAddress (``E``) attribute of the template is replaced by ``email``; a template
  without one gets none added (the address is always in the SAN);
* Gold: every CN is replaced by the display name (RFC 5322 From, RFC 2047 decoded by the
  caller); all other attributes (O, OU, C, ...) are kept as written.  Without a usable
  display name (none, empty after trimming, longer than 64 characters, holding control
  characters, or itself an e-mail address) there is no Gold subject: :class:`DnError`.  A
  Gold certificate names a person (SwissSign's guide: the CN is "replaced with information
  that corresponds to the requesting user"; the S/MIME BR sponsor-validated profile needs the
  person's name), so the address is no stand-in: the CA would refuse it, or issue a
  certificate that does not say who signs;
* Silver: the template holds only a CN (and optionally an emailAddress), and the CN is kept
  as written — the CA decides what a Silver subject says;
* the SAN is one rfc822Name: ``email`` (domain lower-cased, local part kept).

The product kind comes, in this order, from ``cmcgate.pki.productKind``, from the ``product``
of the URL query when it contains ``gold`` or ``silver`` (case-insensitive; ``gold`` wins when
both appear), else from the template: only CN/emailAddress means Silver, anything more Gold.

The gateway requests exactly this; a CA (the bundled one included) may rewrite a CN that its
profile does not allow.
"""

from __future__ import annotations

import enum
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from config.dn import attribute_label, make_attribute
from config.errors import DnError

MAX_CN = 64
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_SILVER_ALLOWED = {NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS}


class ProductKind(enum.StrEnum):
    SILVER = "silver"
    GOLD = "gold"


def normalise_email(email: str) -> str:
    """``Alice@Example.ORG`` -> ``Alice@example.org``; DnError if it is no plain address."""
    candidate = email.strip()
    if not _EMAIL_RE.match(candidate):
        raise DnError(f"{candidate[:80]!r} is not an e-mail address usable in a certificate")
    local, _, domain = candidate.rpartition("@")
    return f"{local}@{domain.lower()}"


def kind_from_product(product: str) -> ProductKind | None:
    lowered = product.lower()
    if "gold" in lowered:
        return ProductKind.GOLD
    if "silver" in lowered:
        return ProductKind.SILVER
    return None


def kind_from_template(template: x509.Name) -> ProductKind:
    oids = {attribute.oid for attribute in template}
    return ProductKind.SILVER if oids <= _SILVER_ALLOWED else ProductKind.GOLD


def check_template(template: x509.Name, kind: ProductKind) -> None:
    """DnError when ``template`` cannot serve ``kind``."""
    oids = {attribute.oid for attribute in template}
    if kind is ProductKind.SILVER:
        extra = sorted(attribute_label(oid) for oid in oids - _SILVER_ALLOWED)
        if extra:
            raise DnError(
                f"a Silver template holds only the CN, not {', '.join(extra)} "
                "(set cmcgate.pki.productKind=gold if this is a Gold product)"
            )
        if NameOID.COMMON_NAME not in oids:
            raise DnError("a Silver template must hold a CN")


def usable_display_name(candidate: str | None) -> str | None:
    """``candidate`` with blanks collapsed when it can be a Gold CN (a person's name), else
    None: empty, longer than 64 characters, control characters, or an e-mail address."""
    if candidate is None:
        return None
    text = " ".join(candidate.split())
    if not text or len(text) > MAX_CN or "@" in text:
        return None
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text):
        return None
    return text


def subject_for(
    template: x509.Name, *, email: str, display_name: str | None = None, kind: ProductKind
) -> tuple[x509.Name, list[str]]:
    """The subject to request for ``email`` and its SAN rfc822Names (see the module doc)."""
    address = normalise_email(email)
    common_name = usable_display_name(display_name)
    rdns = []
    for rdn in template.rdns:
        attributes = []
        for attribute in rdn:
            value = attribute.value
            if attribute.oid == NameOID.EMAIL_ADDRESS:
                value = address
            elif attribute.oid == NameOID.COMMON_NAME and kind is ProductKind.GOLD:
                if common_name is None:
                    raise DnError(
                        f"a Gold certificate's CN is the user's name, and there is no usable "
                        f"display name for {address!r} (the From header gives "
                        + ("none" if not display_name else f"{display_name[:70]!r}")
                        + ")"
                    )
                value = common_name
            attributes.append(make_attribute(attribute.oid, str(value)))
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns), [address]
