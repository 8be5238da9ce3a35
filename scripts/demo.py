"""``make demo``: the main job end to end on embedded defaults (``python scripts/demo.py``).

It starts every part itself — a SoftHSM2 token, slapd, the bundled CA in-process, the gateway,
an SMTP sink — so it imports from all four packages; it lives outside them on purpose (the
packages keep their layering, see docs/architecture.md).

Everything runs on loopback in temporary directories and is stopped at the end; the
artefacts stay in ``demo-out/`` so anyone can re-check them with openssl by hand.  Each
step prints what it did; a failed step ends the demo with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from config.errors import CmcgateError
from gateway.devservices import free_port

ALICE = "alice@example.org"
BOB = "bob@partner.example"
PEM = serialization.Encoding.PEM


class DemoFailed(CmcgateError):
    """A demo step did not do what it should."""


class Steps:
    def __init__(self) -> None:
        self.number = 0
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.number += 1
        print(f"[{self.number}] {text}", flush=True)

    def detail(self, text: str) -> None:
        print(f"    {text}", flush=True)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def partner_identity(
    now: datetime, crl_url: str, crl_path: Path
) -> tuple[x509.Certificate, rsa.RSAPrivateKey, x509.Certificate]:
    """Bob's certificate from his own organisation's CA (an external PKI, software keys); the
    partner CA's (empty) CRL is written to ``crl_path``, served at ``crl_url``."""
    from ca.crl import build_crl
    from ca.hierarchy import build_root_ca, ca_name
    from ca.profiles.builder import build_tbs
    from ca.profiles.types import CaEndpoints, IssuanceRequest, Organization
    from ca.settings.types import Profile
    from config.files import write_atomically

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = build_root_ca(ca_key, ca_name("Partner Example CA", "Partner Example", "DE"), now=now)
    bob_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    request = IssuanceRequest(
        public_key=bob_key.public_key(),
        requested_subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BOB)]),
        emails=(BOB,),
        validity=timedelta(days=365),
    )
    organisation = Organization("Partner Example", None, "DE", ("partner.example",))
    endpoints = CaEndpoints(crl_url, crl_url.replace(".crl", ".cer"))
    prepared = build_tbs(Profile.MAILBOX, request, organisation, root, endpoints, now=now)
    crl = build_crl(root, ca_key, [], now=now, next_update=timedelta(days=7))
    write_atomically(crl_path, crl.public_bytes(serialization.Encoding.DER))
    return prepared.sign(ca_key), bob_key, root


def write_properties(
    work: Path,
    https_port: int,
    issuer: str,
    p12: Path,
    password: Path,
    token: Any,
    *,
    sink_port: int,
    ldap_url: str,
    ldap_base: str,
    partner_root: Path,
) -> Path:
    """The gateway's properties: the PKI part exactly in the form of the SwissSign/Totemo
    seed (with its slash-form Silver template), then cmcgate's own keys."""
    from config.totemo import pki_connection_properties

    path = work / "gateway.properties"
    path.write_text(
        "# PKI connection as a Totemo admin pastes it (reference 000), pointing at the bundled CA\n"
        + pki_connection_properties(
            server_name="localhost",
            server_port=https_port,
            account="example.ra",
            product="example-silver",
            issuer_dn=issuer,
            access_p12=p12,
            access_password_file=password,
            trusted_roots=work / "ca" / "root-ca.pem",
            subject_template="/CN=Secure Mail: Gateway Certificate ",
            extra={
                "cmcgate.policy.sign": "always",
                "cmcgate.policy.encrypt": "allow",
                # users' keys on the HSM token
                "cmcgate.keys.backend": "pkcs11",
                "cmcgate.keys.module": token.module_path,
                "cmcgate.keys.tokenLabel": token.token_label,
                "cmcgate.keys.pinFile": token.pin_file,
                # the gateway: listen, next hop, state, store, where recipients' certificates are
                "cmcgate.gateway.internalDomains": "example.org",
                "cmcgate.gateway.listen": f"127.0.0.1:{free_port()}",
                "cmcgate.gateway.nextHop": f"127.0.0.1:{sink_port}",
                "cmcgate.gateway.nextHopTls": "off",
                "cmcgate.gateway.stateDir": work / "state",
                "cmcgate.gateway.trustedRoots": partner_root,
                "cmcgate.store.dsn": f"sqlite:///{work / 'gateway.db'}",
                "cmcgate.lookup.ldap.directory.url": ldap_url,
                "cmcgate.lookup.ldap.directory.base": ldap_base,
            },
        )  # fmt: skip
    )
    return path


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.py",
        description="run the end-to-end demo on embedded defaults (artefacts in demo-out/)",
    )
    parser.add_argument("--out", default="demo-out", help="artefact directory (default demo-out)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CmcgateError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    step = Steps()
    with tempfile.TemporaryDirectory(prefix="cmcgate-demo-") as tmp:
        _demo(Path(tmp), out, step)
    print(f"demo OK in {time.monotonic() - step.started:.1f}s; artefacts in {out}/", flush=True)
    return 0


def _demo(work: Path, out: Path, step: Steps) -> None:  # noqa: PLR0915 - a story, told in order
    from ca.init import initialise
    from ca.keys import KeyType
    from ca.keys.softhsm import softhsm_token_context
    from ca.publish.publisher import LdapPublisher
    from ca.service.certs import issue_access_certificate
    from ca.service.http import CaService, ServiceThread
    from config.properties import load
    from gateway.certs.models import Source
    from gateway.devservices import Slapd, SmtpSink
    from gateway.smtp import service as gateway_service

    now = datetime.now(UTC)
    with softhsm_token_context(label="cmcgate-demo") as token, Slapd() as slapd, SmtpSink() as sink:
        step(
            f"SoftHSM2 token 'cmcgate-demo' in {token.directory}; slapd on {slapd.url};"
            f" SMTP sink on 127.0.0.1:{sink.port}"
        )
        people = f"ou=people,{slapd.suffix}"
        with slapd.connection() as conn:
            conn.add(people, ["organizationalUnit"], {"ou": "people"})
        ldap_pass = _write(work / "ldap.pass", slapd.admin_password.encode() + b"\n")

        step("bundled CA: root + S/MIME issuing CA with keys generated on the token")
        http_port = free_port()
        initialise(
            work / "ca", key_backend="pkcs11", pkcs11_module=token.module_path,
            token_label=token.token_label, pin_file=token.pin_file, key_type=KeyType.RSA3072,
            progress=step.detail, account_id="example.ra", organisation_name="Example Org",
            country="CH", email_domains=("example.org",), product_id="example-silver",
            base_url=f"http://127.0.0.1:{http_port}", ldap_url=slapd.url,
            ldap_bind_dn=slapd.admin_dn, ldap_base_dn=people, ldap_password_file=str(ldap_pass),
        )  # fmt: skip
        service = CaService(work / "ca", https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
        ca_thread = ServiceThread(service)
        ca_thread.start()
        try:
            authority = service.ca
            step.detail(
                f"CMC endpoint https://localhost:{service.https_port}/ws/cmc (client certificates"
                f" required); CRL and CA certificates on http://127.0.0.1:{http_port}"
            )
            chain_pem = authority.issuing_cert.public_bytes(PEM) + authority.root_cert.public_bytes(
                PEM
            )
            _write(out / "ca-chain.pem", chain_pem)
            password = _write(work / "access.pass", b"demo-access-secret\n")
            access = issue_access_certificate(authority, "example.ra", b"demo-access-secret")
            p12 = _write(work / "access.p12", access.p12)
            account_dn = access.certificate.subject.rfc4514_string()
            step.detail(f"access certificate (P12) for account example.ra: {account_dn}")

            step(f"{BOB}'s certificate (from his own CA) is in the directory")
            # the partner CA's CRL is served from loopback too (here: the CA's HTTP files)
            bob_cert, bob_key, partner_root = partner_identity(
                now,
                f"http://127.0.0.1:{http_port}/crl/partner.crl",
                work / "ca" / "crl" / "partner.crl",
            )
            _write(out / "bob.key.pem", _key_pem(bob_key))
            _write(out / "bob.cert.pem", bob_cert.public_bytes(PEM))
            partner_pem = _write(out / "partner-ca.pem", partner_root.public_bytes(PEM))
            with slapd.connection() as conn:
                conn.add(
                    f"mail={BOB},{people}", ["inetOrgPerson"],
                    {"cn": "Bob Partner", "sn": "Partner", "mail": BOB,
                     "userCertificate;binary": bob_cert.public_bytes(serialization.Encoding.DER)},
                )  # fmt: skip

            step("gateway: properties in the seed's form (Totemo/SwissSign), broker on")
            issuer = authority.issuing_cert.subject.rfc4514_string()
            properties = write_properties(
                work, service.https_port, issuer, p12, password, token,
                sink_port=sink.port, ldap_url=slapd.url, ldap_base=people,
                partner_root=partner_pem.resolve(),
            )  # fmt: skip
            shutil.copy(properties, out / "gateway.properties")
            config = load(properties)
            gateway = gateway_service.start(config)
            try:
                listen = config.gateway.listen
                step.detail(
                    f"listening on {listen.host}:{listen.port}, next hop 127.0.0.1:{sink.port}"
                )
                step(f"{ALICE}, unknown so far, sends a mail to {BOB}")
                message = EmailMessage()
                message["From"] = f"Alice Example <{ALICE}>"
                message["To"] = f"Bob Partner <{BOB}>"
                message["Subject"] = "Quartalszahlen – vertraulich"
                message.set_content("Hallo Bob,\n\nanbei die Zahlen für Q3.\n\nGrüsse, Alice\n")
                started = time.monotonic()
                with smtplib.SMTP(listen.host, listen.port, timeout=60) as smtp:
                    refused = smtp.send_message(message)
                if refused:
                    raise DemoFailed(f"gateway refused recipients: {refused}")
                step.detail(
                    f"SMTP 250 after {1000 * (time.monotonic() - started):.0f} ms, given only"
                    " once the next hop had accepted"
                )
                store = gateway.stores.certs
                alice_record = store.best_for_signing(ALICE)
                bob_records = store.find(email=BOB)
            finally:
                gateway.stop()
            if alice_record is None:
                raise DemoFailed(f"{ALICE} was not enrolled")
            alice_cert = alice_record.certificate
            orders = authority.store.find_orders(account="example.ra")
            if len(orders) != 1:
                raise DemoFailed(f"expected one order at the CA, found {len(orders)}")
            order = orders[0]
            step(f"enrolled {ALICE} via CMC: order {order.id} {order.status.value}")
            step.detail(
                f"serial {alice_cert.serial_number:x},"
                f" subject {alice_cert.subject.rfc4514_string()},"
                f" key {alice_record.key_label} on the token"
            )
            for change in order.subject_changes:
                step.detail(
                    f"CA changed {change.attribute}: {change.requested!r} -> {change.issued!r}"
                )
            _write(out / "alice.cert.pem", alice_cert.public_bytes(PEM))
            if not bob_records or bob_records[0].source is not Source.LDAP:
                raise DemoFailed(f"{BOB} was not found in LDAP")
            step(f"found {BOB} in LDAP: {bob_records[0].certificate.issuer.rfc4514_string()}")

            received = sink.received()
            if len(received) != 1:
                raise DemoFailed(f"the sink received {len(received)} messages, expected 1")
            delivered = _write(out / "delivered.eml", received[0].content)
            if b"application/pkcs7-mime" not in received[0].content:
                raise DemoFailed("the delivered message is not S/MIME encrypted")
            step(f"signed+encrypted, delivered: {delivered} ({len(received[0].content)} bytes)")

            step(f"the CA publishes {ALICE}'s certificate to LDAP (publication job)")
            ldap_settings = authority.settings.ca.ldap
            assert ldap_settings is not None
            publication = LdapPublisher(ldap_settings, authority.store).run_due()
            step.detail(f"publication run: {publication}")
            with slapd.connection() as conn:
                conn.search(people, f"(mail={ALICE})", attributes=["userCertificate;binary"])
                published = [v for e in conn.entries for v in e["userCertificate;binary"].values]
                dns = [e.entry_dn for e in conn.entries]
            if alice_cert.public_bytes(serialization.Encoding.DER) not in published:
                raise DemoFailed(f"{ALICE}'s certificate is not in LDAP")
            step.detail(f"{dns[0]}: userCertificate;binary = serial {alice_cert.serial_number:x}")
        finally:
            ca_thread.stop()

        step("proof: openssl cms -decrypt with bob's key, then -verify against the CA chain")
        decrypted = out / "decrypted.eml"
        bob_pem = str(out / "bob.cert.pem")
        result = _openssl("cms", "-decrypt", "-in", str(delivered), "-recip", bob_pem,
                          "-inkey", str(out / "bob.key.pem"), "-out", str(decrypted))  # fmt: skip
        if result.returncode != 0:
            raise DemoFailed(f"openssl cms -decrypt failed: {result.stderr.strip()}")
        verified = out / "verified.eml"
        chain = str(out / "ca-chain.pem")
        result = _openssl("cms", "-verify", "-in", str(decrypted), "-CAfile", chain,
                          "-purpose", "smimesign", "-out", str(verified))  # fmt: skip
        if result.returncode != 0 or "Verification successful" not in result.stderr:
            raise DemoFailed(f"openssl cms -verify failed: {result.stderr.strip()}")
        step.detail(f"openssl: {result.stderr.strip()}; signer {ALICE}; content in {verified}")


if __name__ == "__main__":
    sys.exit(main())
