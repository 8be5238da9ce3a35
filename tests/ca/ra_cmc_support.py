"""A ``ca serve`` reached over real CMC/HTTPS by a gateway's client configuration, with the
RA part of ca.yaml as a test needs it (shared by the RA's CMC tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ca.init import initialise
from ca.keys import KeyType
from ca.service.http import CaService, ServiceThread
from cmc.client import CmcClient
from cmc.client_config import client_from_config
from config.properties import load
from tests.ca.test_cmc_server import ACCOUNT, PASSWORD, _free_port, _service_cli, _write_props


@dataclass
class CmcServed:
    service: CaService
    props: Path

    def client(self) -> CmcClient:
        pki = load(self.props).pki
        assert pki is not None
        return client_from_config(pki)

    def url(self, path: str) -> str:
        """A URL on the plain-HTTP listener (CRLs, the confirmation page)."""
        return f"http://127.0.0.1:{self.service.http_port}{path}"


@contextmanager
def served_cmc_ca(
    tmp: Path, product: str, edit: Callable[[dict[str, Any]], None]
) -> Iterator[CmcServed]:
    """``ca init`` (account ACCOUNT, domain example.org, product example-silver), ``edit``
    applied to ca.yaml, ``ca serve`` started, and a gateway enrolling on ``product``."""
    directory = tmp / "ca"
    http_port = _free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id="example-silver",
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    doc = yaml.safe_load(ca_yaml.read_text())
    edit(doc)
    ca_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    thread = ServiceThread(service)
    thread.start()
    try:
        (tmp / "p12.pass").write_bytes(PASSWORD + b"\n")
        assert _service_cli(["access-cert", "--dir", str(directory), "--account", ACCOUNT,
                             "--out", str(tmp / "gw.p12"),
                             "--password-file", str(tmp / "p12.pass")]) == 0  # fmt: skip
        issuer = service.ca.issuing_cert.subject.rfc4514_string()
        url = f"/ws/cmc?account={ACCOUNT}&product={product}&validity=1y"
        props = _write_props(tmp, "gw", service.https_port, url, tmp / "gw.p12", issuer)
        yield CmcServed(service, props)
    finally:
        thread.stop()
