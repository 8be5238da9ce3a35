"""DNS lookups of the RA service (domain pre-validation TXT tokens, CAA): dnspython, blocking.

The resolver is built from ``ra.dns`` of ca.yaml: its nameservers and port (a local resolver,
or in tests the loopback server of scripts/devdns.py), else the system resolver
(/etc/resolv.conf). Callers run lookups in threads (the scheduler, the REST layer's
executor), never on an event loop.

An answer that the name or the type does not exist (NXDOMAIN, NODATA) is an answer: an empty
tuple. Everything else (timeout, SERVFAIL, no nameserver reachable) is
:class:`DnsUnavailable`, a temporary error (REST 503): a TXT check that could not ask stays
pending, and a CAA check that could not ask issues nothing (RFC 8659 §3: a CA must not treat a
lookup failure as permission).
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver

from ca.settings.ra import DnsSettings
from config.errors import CmcgateError


class DnsUnavailable(CmcgateError):
    """A DNS lookup failed (timeout, SERVFAIL, no resolver): try again later."""

    status = 503


def make_resolver(settings: DnsSettings) -> dns.resolver.Resolver:
    """A resolver for ``ra.dns``: its nameservers/port, else the system's; no cache (a TXT
    record just published must be seen by the next check)."""
    try:
        resolver = dns.resolver.Resolver(configure=not settings.nameservers)
    except dns.exception.DNSException as exc:
        raise DnsUnavailable(f"no DNS resolver configured: {exc}") from None
    if settings.nameservers:
        resolver.nameservers = list(settings.nameservers)
        resolver.port = settings.port
    resolver.timeout = float(settings.timeout_seconds)
    resolver.lifetime = float(settings.timeout_seconds)
    resolver.cache = None
    return resolver


def lookup(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> tuple[dns.rdata.Rdata, ...]:
    """The records of ``name`` (absolute; CNAMEs followed); () for NXDOMAIN or NODATA."""
    try:
        qname = dns.name.from_text(name if name.endswith(".") else name + ".")
        answer = resolver.resolve(qname, dns.rdatatype.from_text(rdtype), search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    except dns.resolver.LifetimeTimeout:
        raise DnsUnavailable(f"DNS lookup of {name} {rdtype} timed out") from None
    except dns.resolver.NoNameservers:
        raise DnsUnavailable(f"DNS lookup of {name} {rdtype}: no nameserver answered") from None
    except dns.exception.DNSException as exc:
        raise DnsUnavailable(f"DNS lookup of {name} {rdtype} failed: {exc}") from None
    return tuple(answer)


def txt_strings(resolver: dns.resolver.Resolver, name: str) -> tuple[str, ...]:
    """The TXT values at ``name``, each record's character-strings joined (RFC 7208 §3.3)."""
    out = []
    for rdata in lookup(resolver, name, "TXT"):
        strings = getattr(rdata, "strings", ())
        out.append(b"".join(strings).decode("utf-8", "replace"))
    return tuple(out)
