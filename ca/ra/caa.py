"""CAA for S/MIME: RFC 9495's ``issuemail`` property over RFC 8659's record-set rules.

Before a certificate is signed (status PRE_VALIDATION) the CA looks up, for the domain of each
address, the *relevant* CAA record set: the CAA RRset of the domain itself, else of its
parent, climbing towards (not including) the root (RFC 8659 §3); CNAMEs are followed by the
resolver. The decision over that set (:func:`evaluate_issuemail`, a pure function):

* no records: anyone may issue;
* a record with the Issuer Critical flag (128) and a tag this CA does not understand: refuse
  (RFC 8659 §4.1);
* no ``issuemail`` record (only ``issue``, ``issuewild``, ``iodef``...): S/MIME issuance is
  not restricted (RFC 9495 §3: ``issue`` speaks for TLS certificates only);
* otherwise one ``issuemail`` record must name one of this CA's identities
  (``ra.caa_identities``); ``issuemail ";"`` names nobody. Tags and the issuer domain name are
  compared case-insensitively; parameters after ``;`` are checked for syntax and otherwise
  ignored; a malformed value authorises no one (RFC 8659 §4.2).

A lookup failure is not permission: :class:`ca.ra.dns.DnsUnavailable` (nothing is issued,
try later). The check runs only when ``ra.caa_identities`` is set: without identities there
is nothing a record could name, and a development CA must not query public DNS for its test
domains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.resolver

from ca.ra.dns import lookup, make_resolver
from ca.settings.ra import RaSettings
from config.errors import CmcgateError

CRITICAL = 128
#: property tags this CA understands (RFC 8659, RFC 9495, RFC 8657 contacts, BIMI's issuevmc)
KNOWN_TAGS = frozenset(
    {"issue", "issuewild", "iodef", "issuemail", "contactemail", "contactphone", "issuevmc"}
)
_LABEL = r"[A-Za-z0-9](?:-*[A-Za-z0-9])*"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PARAMETER = re.compile(rf"^{_LABEL}[ \t]*=[ \t]*[\x21-\x3a\x3c-\x7e]*$")


class CaaRefused(CmcgateError):
    """The domain's CAA records do not let this CA issue S/MIME certificates for it."""

    status = 403


@dataclass(frozen=True)
class CaaRecord:
    flags: int
    tag: str
    value: str

    @property
    def critical(self) -> bool:
        return bool(self.flags & CRITICAL)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.flags} {self.tag} "{escaped}"'


@dataclass(frozen=True)
class CaaDecision:
    allowed: bool
    #: the domain asked about, and the owner of the relevant record set (None: no records)
    domain: str
    owner: str | None
    records: tuple[CaaRecord, ...]
    reason: str


def issuemail_issuer(value: str) -> str:
    """The issuer domain name of an ``issuemail`` value, lower case ('' for none, as in
    ``";"``); ValueError when the value is malformed."""
    issuer, semicolon, params = value.partition(";")
    issuer = issuer.strip(" \t")
    if issuer and not _DOMAIN.match(issuer):
        raise ValueError(f"issuer {issuer!r} is not a domain name")
    if semicolon:
        for parameter in params.split(";"):
            parameter = parameter.strip(" \t")
            if parameter and not _PARAMETER.match(parameter):
                raise ValueError(f"parameter {parameter!r} is malformed")
    return issuer.lower()


def evaluate_issuemail(records: Sequence[CaaRecord], identities: Iterable[str]) -> tuple[bool, str]:
    """(allowed, why) for the relevant CAA record set and this CA's issuer domain names."""
    ours = {i.strip().lower().rstrip(".") for i in identities}
    if not records:
        return True, "no CAA records"
    for record in records:
        if record.critical and record.tag.lower() not in KNOWN_TAGS:
            return False, f"critical CAA property {record.tag!r} not understood: {record}"
    mail = [r for r in records if r.tag.lower() == "issuemail"]
    if not mail:
        return True, "no issuemail property (issue/issuewild restrict TLS certificates only)"
    for record in mail:
        try:
            issuer = issuemail_issuer(record.value)
        except ValueError:
            continue
        if issuer and issuer in ours:
            return True, f"authorised by {record}"
    return False, "issuemail does not name this CA: " + "; ".join(str(r) for r in mail)


def relevant_caa(
    resolver: dns.resolver.Resolver, domain: str
) -> tuple[str | None, tuple[CaaRecord, ...]]:
    """(owner, records) of the first non-empty CAA RRset from ``domain`` up to, not
    including, the root; (None, ()) when there is none."""
    labels = domain.strip(".").lower().split(".")
    for i in range(len(labels)):
        owner = ".".join(labels[i:])
        found = lookup(resolver, owner, "CAA")
        if found:
            return owner, tuple(_record(r) for r in found)
    return None, ()


def _record(rdata: object) -> CaaRecord:
    tag = getattr(rdata, "tag", b"")
    value = getattr(rdata, "value", b"")
    return CaaRecord(
        int(getattr(rdata, "flags", 0)),
        tag.decode("ascii", "replace") if isinstance(tag, bytes) else str(tag),
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value),
    )


def check_issuemail(
    resolver: dns.resolver.Resolver, domain: str, identities: Iterable[str]
) -> CaaDecision:
    """Look up and evaluate the relevant CAA record set of ``domain`` (DnsUnavailable on a
    lookup failure)."""
    owner, records = relevant_caa(resolver, domain)
    allowed, why = evaluate_issuemail(records, identities)
    where = f"CAA of {owner}" if owner else "CAA"
    return CaaDecision(allowed, domain, owner, records, f"{where}: {why}")


def require_issuemail(settings: RaSettings, emails: Iterable[str]) -> tuple[CaaDecision, ...]:
    """The PRE_VALIDATION check of an order's addresses: CaaRefused naming the domain and
    the records when one domain's CAA forbids this CA; nothing checked when
    ``ra.caa_identities`` is empty."""
    if not settings.caa_identities:
        return ()
    domains = dict.fromkeys(e.rpartition("@")[2].strip().lower().rstrip(".") for e in emails)
    resolver = make_resolver(settings.dns)
    decisions = []
    for domain in domains:
        decision = check_issuemail(resolver, domain, settings.caa_identities)
        if not decision.allowed:
            raise CaaRefused(f"CAA forbids issuance for {domain}: {decision.reason}")
        decisions.append(decision)
    return tuple(decisions)
