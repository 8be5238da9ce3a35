"""A running ``ca serve`` with the RA REST API on loopback, for the RA API tests.

Real HTTPS (the service's TLS certificate, checked against the infrastructure CA), a real
SQLite store, software CA keys; two accounts (``example.ra`` for example.org, ``other.ra`` for
other.org) and API users made through :class:`ca.ra.auth.RaAuth`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.init import initialise
from ca.keys import KeyType
from ca.ra.auth import RaAuth
from ca.service.http import CaService, ServiceThread
from tests.certbuild import email_csr

ACCOUNT, OTHER = "example.ra", "other.ra"
SILVER, MANUAL, OTHER_SILVER = "example-silver", "example-manual", "other-silver"
PREFIX = "/pki/api/v2"
EXTRA_PRODUCTS = """
  example-manual:
    profile: mailbox
    validities: [1y]
    key_types: [rsa2048, rsa3072, ec-p256, ec-p384]
    approval: manual
    allow_simple_request: false
    publish_ldap: false
  other-silver:
    profile: mailbox
    validities: [1y]
    key_types: [ec-p256]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
"""
OTHER_ACCOUNT = """
  other.ra:
    organisation:
      name: "Other AG"
      country: "CH"
    email_domains:
      - "other.org"
    products: [other-silver]

"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_ca(directory: Path, *, products: str = "", product_ids: tuple[str, ...] = ()) -> None:
    """A software-key CA; ``products`` (YAML) are added and offered to example.ra."""
    http_port = free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=SILVER,
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    text = ca_yaml.read_text()
    offered = ", ".join((SILVER, MANUAL, *product_ids))
    text = text.replace(f"products: [{SILVER}]", f"products: [{offered}]")
    text = text.replace("# what can be ordered", OTHER_ACCOUNT + "# what can be ordered")
    ca_yaml.write_text(text + EXTRA_PRODUCTS + products)


def csr_pem(email: str, cn: str | None = None) -> str:
    csr = email_csr(ec.generate_private_key(ec.SECP256R1()), email, cn=cn)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class RaRunning:
    directory: Path
    service: CaService
    thread: ServiceThread
    session: requests.Session
    #: the trust bundle (passed per request: REQUESTS_CA_BUNDLE would override Session.verify)
    verify: str

    @property
    def root(self) -> str:
        return f"https://127.0.0.1:{self.service.ra_port}"

    @property
    def auth(self) -> RaAuth:
        services = self.service.ra_services
        assert services is not None
        return services.auth

    def user(self, name: str, grants: Mapping[str, Iterable[str]]) -> str:
        """A new API user with one key; the key."""
        self.auth.create_user(name, grants, by="test")
        return self.auth.create_key(name, by="test")

    def jwt(self, name: str, key: str) -> str:
        answer = self.post("/jwt", json={"userName": name, "apiKey": key})
        assert answer.status_code == 200, answer.text
        return answer.text

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        url = self.root + (path if path.startswith("/openapi") else PREFIX + path)
        kwargs.setdefault("verify", self.verify)
        return self.session.request(method, url, headers=headers, timeout=60, **kwargs)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, token, **kwargs)

    def post(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, token, **kwargs)


def start_ra(
    tmp: Path, *, ra_yaml: str = "", products: str = "", product_ids: tuple[str, ...] = ()
) -> RaRunning:
    """A CA (``ra_yaml``: an ``ra:`` section for ca.yaml) served with the RA API."""
    directory = tmp / "ca"
    make_ca(directory, products=products, product_ids=product_ids)
    if ra_yaml:
        with (directory / "ca.yaml").open("a") as handle:
            handle.write("\n" + ra_yaml)
    service = CaService(
        directory, https=("127.0.0.1", 0), http=("127.0.0.1", free_port()),
        ra=("127.0.0.1", 0),
    )  # fmt: skip
    thread = ServiceThread(service)
    thread.start()
    session = requests.Session()
    bundle = tmp / "ra-trust.pem"  # the TLS certificate's issuer and its root
    bundle.write_bytes((directory / "infra-ca.pem").read_bytes()
                       + (directory / "root-ca.pem").read_bytes())  # fmt: skip
    return RaRunning(directory, service, thread, session, str(bundle))
