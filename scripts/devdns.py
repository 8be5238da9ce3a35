#!/usr/bin/env python3
"""A small authoritative DNS server for development and the test-suite (dnspython only).

It answers UDP and TCP queries on one loopback address and port from a zone file that it
re-reads whenever the file changes (mtime, size or inode), so a test or a developer publishes
a record by rewriting the file: the domain pre-validation TXT tokens and the CAA records of
RFC 8659 / RFC 9495 that cmcgate's RA looks up (``ra.dns.nameservers`` / ``ra.dns.port``).

Zone file lines (``#`` or ``;`` start a comment; names are absolute or made absolute)::

    _cmcgate-challenge.example.org. 60 TXT "the-token"
    example.org. CAA 0 issuemail "ca.example.net"
    www.example.org. CNAME example.org.

Answers are authoritative (AA set): an existing name without the asked type is NODATA
(NOERROR, empty answer), a name with records below it (an empty non-terminal such as
``example.org.`` above ``_cmcgate-challenge.example.org.``) is NODATA too, any other name
NXDOMAIN. CNAMEs are followed within the zone. No SOA is needed; a line that does not parse
is reported on stderr and skipped, the rest of the zone is served.

    python scripts/devdns.py --zone zone.txt --listen 127.0.0.1:0
    listening on 127.0.0.1:40123
"""

from __future__ import annotations

import argparse
import os
import socket
import socketserver
import sys
import threading
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

DEFAULT_TTL = 60
_MAX_CNAME_CHAIN = 8

Zone = dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset]


def parse_zone(text: str, *, errors: list[str] | None = None) -> Zone:
    """``NAME [TTL] [IN] TYPE RDATA`` lines into RRsets keyed by (name, type)."""
    zone: Zone = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        try:
            name, ttl, rdtype, rdata = _parse_line(line)
        except (ValueError, dns.exception.DNSException) as exc:
            if errors is not None:
                errors.append(f"line {number}: {exc}: {line}")
            continue
        key = (name, rdtype)
        if key not in zone:
            zone[key] = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        zone[key].add(rdata, ttl)
    return zone


def _parse_line(line: str) -> tuple[dns.name.Name, int, dns.rdatatype.RdataType, dns.rdata.Rdata]:
    parts = line.split(None, 1)
    if len(parts) < 2:
        raise ValueError("expected NAME [TTL] [IN] TYPE RDATA")
    owner, rest = parts
    name = dns.name.from_text(owner if owner.endswith(".") else owner + ".")
    ttl = DEFAULT_TTL
    words = rest.split(None, 1)
    if words and words[0].isascii() and words[0].isdigit():
        ttl = int(words[0])
        rest = words[1] if len(words) > 1 else ""
        words = rest.split(None, 1)
    if words and words[0].upper() == "IN":
        rest = words[1] if len(words) > 1 else ""
        words = rest.split(None, 1)
    if len(words) < 2:
        raise ValueError("expected TYPE RDATA")
    rdtype = dns.rdatatype.from_text(words[0].upper())
    rdata = dns.rdata.from_text(
        dns.rdataclass.IN, rdtype, words[1], origin=dns.name.root, relativize=False
    )
    return name, ttl, rdtype, rdata


def answer(zone: Zone, query: dns.message.Message) -> dns.message.Message:
    """The authoritative response to ``query`` from ``zone``."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    response.flags &= ~int(dns.flags.RA)
    if query.opcode() != 0 or len(query.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if query.opcode() != 0 else dns.rcode.FORMERR)
        return response
    question = query.question[0]
    name, rdtype = question.name, dns.rdatatype.RdataType(question.rdtype)
    for _ in range(_MAX_CNAME_CHAIN):
        found = zone.get((name, rdtype))
        if found is not None:
            response.answer.append(found)
            return response
        cname = zone.get((name, dns.rdatatype.CNAME))
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        response.answer.append(cname)
        name = next(iter(cname)).target  # type: ignore[attr-defined]
    if not _exists(zone, name):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


def _exists(zone: Zone, name: dns.name.Name) -> bool:
    """The name owns records or has records below it (an empty non-terminal)."""
    return any(owner == name or owner.is_subdomain(name) for owner, _ in zone)


class DevDnsServer:
    """The server, in threads of this process: ``start()``, ``.port``, ``stop()``."""

    def __init__(self, zone_file: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone_file = Path(zone_file)
        self.host = host
        self.requested_port = port
        self.port = 0
        self._zone: Zone = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    def zone(self) -> Zone:
        """The parsed zone file, re-read when it changed since the last query."""
        try:
            st = os.stat(self.zone_file)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                errors: list[str] = []
                try:
                    text = self.zone_file.read_text(encoding="utf-8")
                except OSError:
                    text = ""
                self._zone = parse_zone(text, errors=errors)
                self._stamp = stamp
                for error in errors:
                    print(f"devdns: {self.zone_file}: {error}", file=sys.stderr)
            return self._zone

    def respond(self, wire: bytes, *, max_size: int) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = answer(self.zone(), query)
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=min(max_size, limit))
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    def start(self) -> int:
        """Bind UDP and TCP on the same port (a free one for port 0); returns the port."""
        server = self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.respond(data, max_size=65535)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    head = self.rfile.read(2)
                    if len(head) < 2:
                        return
                    data = self.rfile.read(int.from_bytes(head, "big"))
                    reply = server.respond(data, max_size=65535)
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        class UdpServer(socketserver.ThreadingUDPServer):
            address_family = family
            daemon_threads = True

        class TcpServer(socketserver.ThreadingTCPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(20):
            udp = UdpServer((self.host, self.requested_port), Udp)
            port = int(udp.server_address[1])
            try:
                tcp = TcpServer((self.host, port), Tcp)
            except OSError:
                udp.server_close()
                if self.requested_port:
                    raise
                continue
            break
        else:
            raise OSError(f"no free port on {self.host} for both UDP and TCP")
        self.port = port
        self._servers = [udp, tcp]
        for srv in self._servers:
            thread = threading.Thread(target=srv.serve_forever, name="devdns", daemon=True)
            thread.start()
            self._threads.append(thread)
        return port

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--zone", required=True, help="zone file (re-read when it changes)")
    parser.add_argument("--listen", default="127.0.0.1:5353", help="HOST:PORT (port 0: free)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()):
        parser.error(f"--listen {args.listen!r} must be HOST:PORT")
    server = DevDnsServer(args.zone, host.strip("[]"), int(port))
    try:
        bound = server.start()
    except OSError as exc:
        print(f"devdns: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    server.zone()
    print(f"listening on {server.host}:{bound}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
