"""scripts/devdns.py: the authoritative DNS server the RA tests resolve against.

Queried over real UDP and TCP with dnspython, as the RA's resolver does; the standalone script
is run as a process the way a developer starts it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.fixtures.dns import SCRIPT, DnsServer, devdns_module


def _ask(server: DnsServer, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=5)


def _texts(response: dns.message.Message) -> list[str]:
    return sorted(
        b"".join(r.strings).decode()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for r in rrset
    )


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_published_txt_record_is_answered_authoritatively(
    dns_server: DnsServer, tcp: bool
) -> None:
    dns_server.add("_cmcgate-challenge.example.org", "TXT", '"the-token"')
    response = _ask(dns_server, "_cmcgate-challenge.example.org.", "TXT", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert _texts(response) == ["the-token"]


def test_nxdomain_and_nodata_are_told_apart(dns_server: DnsServer) -> None:
    dns_server.add("_cmcgate-challenge.example.org", "TXT", '"t"')
    missing = _ask(dns_server, "nothing.example.org.", "TXT")
    assert missing.rcode() == dns.rcode.NXDOMAIN and missing.flags & dns.flags.AA
    no_type = _ask(dns_server, "_cmcgate-challenge.example.org.", "CAA")
    assert no_type.rcode() == dns.rcode.NOERROR and no_type.answer == []
    empty_non_terminal = _ask(dns_server, "example.org.", "CAA")
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR and empty_non_terminal.answer == []


def test_changes_to_the_zone_are_seen_by_the_next_query(dns_server: DnsServer) -> None:
    dns_server.add("example.org", "CAA", '0 issuemail "ca.example.net"')
    first = _ask(dns_server, "example.org.", "CAA")
    assert [r.to_text() for r in first.answer[0]] == ['0 issuemail "ca.example.net"']
    dns_server.add("example.org", "CAA", '0 issue "tls.example.net"')
    assert len(_ask(dns_server, "example.org.", "CAA").answer[0]) == 2
    dns_server.remove("example.org", "CAA", '0 issue "tls.example.net"')
    assert len(_ask(dns_server, "example.org.", "CAA").answer[0]) == 1
    dns_server.clear()
    assert _ask(dns_server, "example.org.", "CAA").rcode() == dns.rcode.NXDOMAIN


def test_a_cname_within_the_zone_is_followed(dns_server: DnsServer) -> None:
    dns_server.add("mail.example.org", "CNAME", "example.net.")
    dns_server.add("example.net", "CAA", '0 issuemail ";"')
    response = _ask(dns_server, "mail.example.org.", "CAA")
    types = [rrset.rdtype for rrset in response.answer]
    assert types == [dns.rdatatype.CNAME, dns.rdatatype.CAA]


def test_a_bad_zone_line_is_skipped_and_reported(dns_server: DnsServer) -> None:
    errors: list[str] = []
    zone = devdns_module().parse_zone(
        'a.example. TXT "ok"\nb.example. 60 BOGUS x\n# comment\nc.example. IN 30 TXT "x"\n',
        errors=errors,
    )
    assert len(zone) == 1 and len(errors) == 2
    assert "line 2" in errors[0] and "line 4" in errors[1]


def test_the_script_runs_standalone_and_prints_its_port(tmp_path: Path) -> None:
    zone = tmp_path / "zone.txt"
    zone.write_text('_cmcgate-challenge.example.org. 60 TXT "from-the-script"\n')
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--zone", str(zone), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.rpartition(":")[2])
        query = dns.message.make_query("_cmcgate-challenge.example.org.", "TXT")
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
        assert _texts(response) == ["from-the-script"]
    finally:
        process.terminate()
        process.wait(timeout=10)
