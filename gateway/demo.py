"""``cmcgate demo`` (``make demo``): the main job end to end on embedded defaults.

Everything runs on loopback in temporary directories and is stopped at the end; the
artefacts stay in ``demo-out/`` so anyone can re-check them with openssl by hand.  Each
step prints what it did; a failed step ends the demo with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from config.errors import CmcgateError

ALICE = "alice@example.org"
BOB = "bob@partner.example"
PEM = serialization.Encoding.PEM


class DemoFailed(CmcgateError):
    """A demo step did not do what it should."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the end-to-end demo on embedded defaults (artefacts in demo-out/)"
    )
    parser.add_argument("--out", default="demo-out", help="artefact directory (default demo-out)")
    parser.set_defaults(func=run)


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


def partner_identity(now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey, x509.Certificate]:
    """Bob's certificate from his own organisation's CA (an external PKI, software keys)."""
    from ca.hierarchy import build_root_ca, ca_name
    from ca.profiles import build_tbs
    from ca.profiles_types import CaEndpoints, IssuanceRequest, Organization
    from ca.settings_types import Profile

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
    endpoints = CaEndpoints(
        "http://pki.partner.example/ca.crl", "http://pki.partner.example/ca.cer"
    )
    prepared = build_tbs(Profile.MAILBOX, request, organisation, root, endpoints, now=now)
    return prepared.sign(ca_key), bob_key, root


class InProcessCmc:
    """The CA's CMC server half, called without HTTP (``send`` like an RFC 5273 transport)."""

    def __init__(self, authority: Any, account: str, product: str) -> None:
        self.authority = authority
        self.account = account
        self.product = product
        self.last_order: str | None = None

    def send(self, body: bytes, *, full: bool) -> bytes:
        from cmc.messages import (
            CMCStatus,
            FullPKIRequest,
            Signer,
            StatusInfo,
            build_full_response,
            parse_request,
            verify_request,
        )

        request = parse_request(body)
        assert isinstance(request, FullPKIRequest)
        verify_request(request)
        tagged = request.pki_data.requests[0]
        csr = tagged.csr  # type: ignore[union-attr]
        result = self.authority.submit(
            csr.public_bytes(serialization.Encoding.DER), self.account, self.product, "1y",
            requested_by="cmc:demo-gateway", transaction_id=request.transaction_id,
            sender_nonce=request.sender_nonce,
        )  # fmt: skip
        self.last_order = result.order.id
        ca = self.authority
        signer = Signer(
            ca.keys.load(ca.settings.ca.issuing.key_label), ca.issuing_cert, (ca.root_cert,)
        )
        return build_full_response(
            signer=signer,
            statuses=[StatusInfo(CMCStatus.SUCCESS, (tagged.body_part_id,))],
            request=request,
            certificates=[result.certificate, *result.chain],
        ).der

    def close(self) -> None:
        pass


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


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
    from ca.authority import CertificateAuthority
    from ca.init import initialise
    from ca.keys import KeyType
    from ca.keys.softhsm import softhsm_token_context
    from cmc.client import CmcClient
    from gateway.devservices import Slapd, SmtpSink, free_port
    from gateway.keystore import KeyStore
    from gateway.pipeline import PipelineSettings, SmimePipeline
    from gateway.policy import EncryptMode, Policy, SignMode
    from gateway.relay import NextHop
    from gateway.server import GatewayHandler, start_front
    from gateway.store import CertStore
    from gateway.store_adapter import StoreCertificates
    from gateway.store_models import Source

    now = datetime.now(UTC)
    with softhsm_token_context(label="cmcgate-demo") as token, Slapd() as slapd, SmtpSink() as sink:
        step(
            f"SoftHSM2 token 'cmcgate-demo' in {token.directory}; slapd on {slapd.url};"
            f" SMTP sink on 127.0.0.1:{sink.port}"
        )

        step("bundled CA: root + S/MIME issuing CA with keys generated on the token")
        initialise(
            work / "ca", key_backend="pkcs11", pkcs11_module=token.module_path,
            token_label=token.token_label, pin_file=token.pin_file, key_type=KeyType.RSA3072,
            progress=step.detail, account_id="example.ra", organisation_name="Example Org",
            country="CH", email_domains=("example.org",), product_id="example-silver",
        )  # fmt: skip
        authority = CertificateAuthority.open(work / "ca" / "ca.yaml")
        chain_pem = authority.issuing_cert.public_bytes(PEM) + authority.root_cert.public_bytes(PEM)
        _write(out / "ca-chain.pem", chain_pem)

        step(f"{BOB}'s certificate (from his own CA) is published in the directory")
        bob_cert, bob_key, partner_root = partner_identity(now)
        _write(out / "bob.key.pem", _key_pem(bob_key))
        _write(out / "bob.cert.pem", bob_cert.public_bytes(PEM))
        _write(out / "partner-ca.pem", partner_root.public_bytes(PEM))
        with slapd.connection() as conn:
            conn.add(f"ou=people,{slapd.suffix}", ["organizationalUnit"], {"ou": "people"})
            conn.add(
                f"mail={BOB},ou=people,{slapd.suffix}", ["inetOrgPerson"],
                {"cn": "Bob Partner", "sn": "Partner", "mail": BOB,
                 "userCertificate;binary": bob_cert.public_bytes(serialization.Encoding.DER)},
            )  # fmt: skip

        store = CertStore.open(f"sqlite:///{work / 'gateway.db'}")
        keys = KeyStore(token.backend())
        try:
            step(f"{ALICE} is new: key pair on the token, CMC Full PKI Request, certificate issued")
            alice_key = keys.generate_for(ALICE, KeyType.RSA2048)
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(
                    x509.Name(
                        [
                            x509.NameAttribute(
                                NameOID.COMMON_NAME, "Secure Mail: Gateway Certificate"
                            )
                        ]
                    )
                )
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(ALICE)]), critical=False
                )
                .sign(alice_key, hashes.SHA256())
            )
            cmc = InProcessCmc(authority, "example.ra", "example-silver")
            client = CmcClient(
                cmc, trust_anchors=(authority.root_cert,), issuer_dn=authority.issuing_cert.subject
            )
            enrolled = client.enroll(csr, alice_key)
            alice_cert = enrolled.certificate
            step.detail(
                f"order {cmc.last_order}: serial {alice_cert.serial_number:x},"
                f" subject {alice_cert.subject.rfc4514_string()}"
            )
            step.detail(
                "(CMC server half called in-process; the HTTPS CMC endpoint is the CA server issue)"
            )
            _write(out / "alice.cert.pem", alice_cert.public_bytes(PEM))
            store.add(
                alice_cert, Source.PKI, key_label=keys.find_label(ALICE, alice_key.public_key())
            )
            store.add_chain(enrolled.chain)
            with slapd.connection() as conn:
                conn.add(
                    f"mail={ALICE},ou=people,{slapd.suffix}", ["inetOrgPerson"],
                    {"cn": ALICE, "sn": "Alice", "mail": ALICE,
                     "userCertificate;binary": alice_cert.public_bytes(serialization.Encoding.DER)},
                )  # fmt: skip
            step.detail(f"published to LDAP as mail={ALICE},ou=people,{slapd.suffix}")

            step(f"looking up {BOB} in LDAP")
            with slapd.connection() as conn:
                conn.search(slapd.suffix, f"(mail={BOB})", attributes=["userCertificate;binary"])
                found = [
                    x509.load_der_x509_certificate(v)
                    for e in conn.entries
                    for v in e["userCertificate;binary"].values
                ]
            if not found:
                raise DemoFailed(f"{BOB} not found in LDAP")
            store.add(found[0], Source.LDAP)
            step.detail(
                f"found: {found[0].subject.rfc4514_string()}"
                f" issued by {found[0].issuer.rfc4514_string()}"
            )

            step("gateway: sign always, encrypt when the recipient's certificate is known")
            settings = PipelineSettings(
                internal_domains=("example.org",),
                policy=Policy(default_sign=SignMode.ALWAYS, default_encrypt=EncryptMode.ALLOW),
                trust_anchors=(authority.root_cert, partner_root),
            )
            pipeline = SmimePipeline(settings, StoreCertificates(store, keys))
            port = free_port()
            handler = GatewayHandler(NextHop("127.0.0.1", sink.port, starttls=False), pipeline)
            controller = start_front(handler, "127.0.0.1", port, max_message_size=25 * 1024 * 1024)
            try:
                message = EmailMessage()
                message["From"] = f"Alice Example <{ALICE}>"
                message["To"] = f"Bob Partner <{BOB}>"
                message["Subject"] = "Quartalszahlen – vertraulich"
                message.set_content("Hallo Bob,\n\nanbei die Zahlen für Q3.\n\nGrüsse, Alice\n")
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                    refused = smtp.send_message(message)
                if refused:
                    raise DemoFailed(f"gateway refused recipients: {refused}")
                step.detail(
                    f"SMTP 250 from the gateway on 127.0.0.1:{port} after the next hop accepted"
                )
            finally:
                controller.stop()
            received = sink.received()
            if len(received) != 1:
                raise DemoFailed(f"the sink received {len(received)} messages, expected 1")
            delivered = _write(out / "delivered.eml", received[0].content)
            if b"application/pkcs7-mime" not in received[0].content:
                raise DemoFailed("the delivered message is not S/MIME encrypted")
            step(
                f"delivered to the sink: {delivered}"
                f" ({len(received[0].content)} bytes, enveloped-data)"
            )
        finally:
            keys.close()
            store.close()
            authority.close()

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
