"""Compose a BR-compliant subject from a request and the account's validated data.

Pure: no I/O. The applicant's requested subject (for instance Totemo's certSubjectDN template
``CN=Secure Mail: Gateway Certificate, O=..., C=...``) is never issued as is: every attribute
is taken from validated data (the organisation, the validated mailbox addresses, the RA's
personal name), and every requested attribute that is replaced or dropped -- and every
attribute added -- is recorded as a :class:`SubjectChange` with the reason.

Rules (strict generation, BR §7.1.4.2):

* mailbox (Silver): ``CN`` = a validated address (the requested CN if it is one of the
  addresses, else the primary address); nothing else except ``emailAddress`` if requested.
* organization: ``C``, ``[ST]``, ``[L]``, ``O``, ``organizationIdentifier`` from the account;
  ``CN`` = the organisation name or an address if requested so, else the primary address.
* sponsor (Gold): as organization plus ``givenName``/``surname`` and ``CN`` = "Given Surname".
  Names come from, in order: ``IssuanceRequest.given_name/surname`` (the RA's validated data),
  the requested ``givenName``/``surname`` attributes, or -- when ``names_from_common_name`` --
  a requested CN that reads as a personal name (split at the last space: given names, surname).
  With none of these the request is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.profiles.errors import EmailNotAllowed, SubjectNotComposable
from ca.profiles.types import IssuanceRequest, Organization, ProfileKind

__all__ = ["ComposedSubject", "SubjectChange", "attribute_label", "check_emails", "compose"]

_LABELS: dict[x509.ObjectIdentifier, str] = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.GIVEN_NAME: "givenName",
    NameOID.SURNAME: "SN",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.TITLE: "title",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}
# RFC 5280 Appendix A upper bounds (characters).
_UPPER_BOUNDS: dict[x509.ObjectIdentifier, int] = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.GIVEN_NAME: 64,
    NameOID.SURNAME: 64,
    NameOID.EMAIL_ADDRESS: 255,
}
_DROP_REASONS: dict[x509.ObjectIdentifier, str] = {
    NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName must be an Affiliate's validated "
    "legal name (BR 7.1.4.2.2 c); cmcgate does not validate it",
    NameOID.SERIAL_NUMBER: "subject serialNumber is assigned by the CA/RA, not by the applicant",
    NameOID.TITLE: "title needs individual validation (BR 7.1.4.2.2 i), which cmcgate does not do",
    NameOID.PSEUDONYM: "pseudonyms are not supported",
    NameOID.STREET_ADDRESS: "streetAddress is prohibited in strict profiles",
    NameOID.POSTAL_CODE: "postalCode is prohibited in strict profiles",
    NameOID.LOCALITY_NAME: "localityName is not part of the account's validated organisation data",
    NameOID.STATE_OR_PROVINCE_NAME: "stateOrProvinceName is not part of the account's "
    "validated organisation data",
}
_ORG_OIDS = (
    NameOID.COUNTRY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATION_IDENTIFIER,
)
_PERSON_OIDS = (NameOID.GIVEN_NAME, NameOID.SURNAME)
_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PERSONAL_NAME_RE = re.compile(r"^[^\W\d_]+([ '.-][^\W\d_]*)*$")
_META_ONLY_RE = re.compile(r"^[\s.\-_]*$")


@dataclass(frozen=True)
class SubjectChange:
    """One difference between the requested and the issued subject.

    ``requested`` is None for an added attribute, ``issued`` is None for a dropped one.
    """

    attribute: str
    requested: str | None
    issued: str | None
    reason: str

    def __str__(self) -> str:
        if self.requested is None:
            return f"{self.attribute} added as {self.issued!r}: {self.reason}"
        if self.issued is None:
            return f"{self.attribute}={self.requested!r} dropped: {self.reason}"
        return f"{self.attribute}={self.requested!r} replaced by {self.issued!r}: {self.reason}"


@dataclass(frozen=True)
class ComposedSubject:
    """The subject and mailbox addresses to issue, and how they differ from the request."""

    kind: ProfileKind
    subject: x509.Name
    emails: tuple[str, ...]
    changes: tuple[SubjectChange, ...]

    def changes_for(self, attribute: str) -> tuple[SubjectChange, ...]:
        return tuple(c for c in self.changes if c.attribute == attribute)

    def describe(self) -> str:
        """The changes, one per line (empty when the request was issued unchanged)."""
        return "\n".join(str(c) for c in self.changes)


def attribute_label(oid: x509.ObjectIdentifier) -> str:
    """``CN``, ``O``, ``organizationIdentifier``... or the dotted OID."""
    return _LABELS.get(oid, oid.dotted_string)


def check_emails(emails: Iterable[str], organization: Organization) -> tuple[str, ...]:
    """Normalise (domain lower-cased, duplicates removed) and check every address.

    Raises EmailNotAllowed for none, a malformed or non-ASCII address, or a domain outside
    the account's validated domains.
    """
    out: list[str] = []
    for raw in emails:
        address = raw.strip()
        local, at, domain = address.rpartition("@")
        domain = domain.lower().rstrip(".")
        if (
            not at
            or not _LOCAL_RE.match(local)
            or ".." in local
            or local[0] == "."
            or (local[-1] == ".")
        ):
            raise EmailNotAllowed(f"{raw!r} is not an ASCII mailbox address local@domain")
        labels = domain.split(".")
        if len(labels) < 2 or not all(_LABEL_RE.match(lab) for lab in labels) or len(domain) > 253:
            raise EmailNotAllowed(f"{raw!r} has no valid ASCII domain")
        if not organization.allows_domain(domain):
            raise EmailNotAllowed(
                f"{raw!r}: domain {domain} is not among the account's validated domains "
                f"({', '.join(organization.validated_domains) or 'none'})"
            )
        norm = f"{local}@{domain}"
        if norm not in out:
            out.append(norm)
    if not out:
        raise EmailNotAllowed("the request names no mailbox address")
    return tuple(out)


class _Composer:
    def __init__(self, kind: ProfileKind, requested: x509.Name) -> None:
        self.kind = kind
        self.requested: dict[x509.ObjectIdentifier, list[str]] = {}
        for attr in requested:
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            self.requested.setdefault(attr.oid, []).append(value)
        self.issued: dict[x509.ObjectIdentifier, str] = {}
        self.changes: list[SubjectChange] = []

    def note(self, oid: x509.ObjectIdentifier, req: str | None, iss: str | None, why: str) -> None:
        self.changes.append(SubjectChange(attribute_label(oid), req, iss, why))

    def put(self, oid: x509.ObjectIdentifier, value: str, replaced: str, added: str | None) -> None:
        """Issue ``value``; record how it differs from what was requested for ``oid``."""
        _check_value(oid, value)
        self.issued[oid] = value
        wanted = self.requested.pop(oid, [])
        if not wanted:
            if added is not None:
                self.note(oid, None, value, added)
            return
        kept = False
        for i, req in enumerate(wanted):
            if req == value and not kept:
                kept = True  # issued as requested
            elif i == 0 and value not in wanted:
                self.note(oid, req, value, replaced)
            else:
                self.note(oid, req, None, f"only one {attribute_label(oid)} is issued")

    def drop_rest(self, reason_for: dict[x509.ObjectIdentifier, str]) -> None:
        for oid, values in self.requested.items():
            why = reason_for.get(oid) or _DROP_REASONS.get(
                oid, f"{attribute_label(oid)} is not allowed in strict S/MIME profiles"
            )
            for v in values:
                self.note(oid, v, None, why)
        self.requested = {}

    def name(self, order: Iterable[x509.ObjectIdentifier]) -> x509.Name:
        return x509.Name([x509.NameAttribute(o, self.issued[o]) for o in order if o in self.issued])


def _check_value(oid: x509.ObjectIdentifier, value: str) -> None:
    if _META_ONLY_RE.match(value):
        raise SubjectNotComposable(f"{attribute_label(oid)} {value!r} is empty or only punctuation")
    bound = _UPPER_BOUNDS.get(oid)
    if bound is not None and len(value) > bound:
        raise SubjectNotComposable(
            f"{attribute_label(oid)} {value!r} is longer than {bound} characters (RFC 5280)"
        )


def compose(
    kind: ProfileKind,
    request: IssuanceRequest,
    organization: Organization,
    *,
    names_from_common_name: bool = True,
) -> ComposedSubject:
    """The subject to issue for ``request`` under ``kind`` (see the module doc for the rules).

    Raises EmailNotAllowed or SubjectNotComposable with the reason.
    """
    kind = ProfileKind(kind)
    emails = check_emails(request.emails, organization)
    c = _Composer(kind, request.requested_subject)
    label = {
        ProfileKind.MAILBOX: "mailbox-validated",
        ProfileKind.ORGANIZATION: "organization-validated",
        ProfileKind.SPONSOR: "sponsor-validated",
    }[kind]
    prohibited: dict[x509.ObjectIdentifier, str] = {}

    if kind is ProfileKind.MAILBOX:
        for oid in (*_ORG_OIDS, *_PERSON_OIDS, NameOID.ORGANIZATIONAL_UNIT_NAME):
            prohibited[oid] = f"{attribute_label(oid)} is prohibited in the {label} profile"
    else:
        _put_organization(c, organization, label)
        if kind is ProfileKind.ORGANIZATION:
            for oid in _PERSON_OIDS:
                prohibited[oid] = f"personal names are prohibited in the {label} profile"

    personal: str | None = None
    if kind is ProfileKind.SPONSOR:
        personal = _put_person(c, request, organization, names_from_common_name)

    _put_common_name(c, emails, organization, personal, label)
    if NameOID.EMAIL_ADDRESS in c.requested:
        wanted = c.requested[NameOID.EMAIL_ADDRESS]
        keep = next((w for w in wanted if w in emails), emails[0])
        c.put(
            NameOID.EMAIL_ADDRESS,
            keep,
            "emailAddress must be one of the validated mailbox addresses",
            None,
        )
    c.drop_rest(prohibited)
    order = (*_ORG_OIDS, *_PERSON_OIDS, NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS)
    return ComposedSubject(kind, c.name(order), emails, tuple(c.changes))


def _put_organization(c: _Composer, org: Organization, label: str) -> None:
    if org.organization_identifier is None:
        raise SubjectNotComposable(
            f"the {label} profile requires organizationIdentifier (BR 7.1.4.2.4/5), "
            f"and organisation {org.name!r} has none configured"
        )
    src = "from the account's validated organisation data"
    added = f"{src} (the {label} profile includes it)"
    c.put(NameOID.COUNTRY_NAME, org.country, f"the validated country is {org.country}", added)
    if org.state:
        c.put(NameOID.STATE_OR_PROVINCE_NAME, org.state, f"replaced {src}", added)
    if org.locality:
        c.put(NameOID.LOCALITY_NAME, org.locality, f"replaced {src}", added)
    c.put(NameOID.ORGANIZATION_NAME, org.name, f"O must be the validated name {src}", added)
    c.put(
        NameOID.ORGANIZATION_IDENTIFIER,
        org.organization_identifier,
        f"organizationIdentifier must be the validated registration reference {src}",
        added,
    )


def _put_person(c: _Composer, req: IssuanceRequest, org: Organization, from_cn: bool) -> str:
    how_added = "the RA's validated personal name"
    given, surname = req.given_name, req.surname
    if given is None and surname is None:
        given = next(iter(c.requested.get(NameOID.GIVEN_NAME, [])), None)
        surname = next(iter(c.requested.get(NameOID.SURNAME, [])), None)
        how_added = "the requested personal name"
    if given is None and surname is None and from_cn:
        cn = (c.requested.get(NameOID.COMMON_NAME) or [""])[0].strip()
        if _looks_like_personal_name(cn, org):
            given, _, surname = " ".join(cn.split()).rpartition(" ")
            how_added = (
                f"derived from the requested commonName {cn!r} "
                "(given names = all words but the last)"
            )
    if surname is None or not surname.strip():
        raise SubjectNotComposable(
            "a sponsor-validated certificate needs the person's validated surname (and given "
            "name): pass given_name/surname, request givenName/surname attributes, or a "
            "commonName of the form 'Given Surname'"
        )
    surname = " ".join(surname.split())
    why = f"personal names come from {how_added}"
    if given and given.strip():
        given = " ".join(given.split())
        c.put(NameOID.GIVEN_NAME, given, why, why)
    else:
        given = None
    c.put(NameOID.SURNAME, surname, why, why)
    return f"{given} {surname}" if given else surname


def _looks_like_personal_name(cn: str, org: Organization) -> bool:
    words = cn.split()
    return (
        len(words) >= 2
        and cn.casefold() != org.name.casefold()
        and _PERSONAL_NAME_RE.match(" ".join(words)) is not None
    )


def _put_common_name(
    c: _Composer, emails: tuple[str, ...], org: Organization, personal: str | None, label: str
) -> None:
    wanted = c.requested.get(NameOID.COMMON_NAME, [])
    allowed = set(emails)
    if c.kind is ProfileKind.ORGANIZATION:
        allowed.add(org.name)
    if personal is not None:
        allowed.add(personal)
    kept = next((w for w in wanted if w in allowed and len(w) <= 64), None)
    if kept is not None:
        c.put(NameOID.COMMON_NAME, kept, "", None)
        return
    if personal is not None and len(personal) <= 64:
        value, what = personal, "the person's validated name"
    elif len(emails[0]) <= 64:
        value, what = emails[0], "the validated mailbox address"
    else:
        for w in c.requested.pop(NameOID.COMMON_NAME, []):
            c.note(NameOID.COMMON_NAME, w, None, "no permitted CN value fits in 64 characters")
        return
    if c.kind is ProfileKind.MAILBOX:
        rule = "a mailbox address"
    elif c.kind is ProfileKind.ORGANIZATION:
        rule = "the organisation name or a mailbox address"
    else:
        rule = "the personal name or a mailbox address"
    c.put(
        NameOID.COMMON_NAME,
        value,
        f"in the {label} profile CN must be {rule} (BR 7.1.4.2.2 a); set to {what}",
        f"{label} certificates carry {what} as CN",
    )
