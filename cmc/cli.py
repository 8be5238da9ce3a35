"""``cmcgate cmc ...`` commands: build a Full PKI Request, inspect CMC files, enrol.

The only module of ``cmc`` that touches files.  ``cmc enroll`` generates a key and CSR, enrols
over RFC 5273 with :mod:`cmc.client` and writes PEM files.  Exit status: 0 issued, 2 failed
(one line on stderr), 3 pending: the CA holds the request for approval; the pend token is
printed and the state :meth:`cmc.client.CmcClient.poll` needs is saved next to the
certificate path (``CERT.pending.json``), the key already written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cmc.errors import CmcError
from cmc.inspect import inspect_bytes, to_dict, to_text
from cmc.messages.requests import build_full_request
from cmc.messages.signing import Signer

if TYPE_CHECKING:
    from cmc.transport.http import TransportSettings


class CliInputError(CmcError):
    """A file given on the command line is missing, unreadable or of the wrong kind."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliInputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_key(path: str) -> Any:
    data = _read(path, "key")
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, None)
    except (ValueError, TypeError) as exc:
        raise CliInputError(f"{path} is not an unencrypted private key: {exc}") from None
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CliInputError(f"{path}: {type(key).__name__} keys are not supported")
    return key


def _load_csr(path: str) -> x509.CertificateSigningRequest:
    data = _read(path, "CSR")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CliInputError(f"{path} is not a PKCS#10 request: {exc}") from None


def _subject(args: argparse.Namespace) -> x509.Name:
    if args.subject:
        try:
            return x509.Name.from_rfc4514_string(args.subject)
        except ValueError as exc:
            raise CliInputError(
                f"--subject {args.subject!r} is not an RFC 4514 DN: {exc}"
            ) from None
    if args.email:
        return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, args.email)])
    raise CliInputError("--key needs --subject or --email to build the CSR")


def _make_csr(key: Any, args: argparse.Namespace) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(args))
    if args.email:
        san = x509.SubjectAlternativeName([x509.RFC822Name(args.email)])
        builder = builder.add_extension(san, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _access_signer(args: argparse.Namespace) -> Signer:
    from cmc.transport.pkcs12 import load_pkcs12

    password = None
    if args.password_file:
        password = _read(args.password_file, "password file").rstrip(b"\r\n")
    credential = load_pkcs12(_read(args.sign_with, "access PKCS#12"), password)
    key = credential.private_key
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CliInputError(f"{args.sign_with}: {type(key).__name__} keys cannot sign requests")
    return Signer(key, credential.certificate, credential.chain)


def cmd_request(args: argparse.Namespace) -> int:
    if args.key:
        key = _load_key(args.key)
        csr = _make_csr(key, args)
        signer = _access_signer(args) if args.sign_with else Signer(key)
    else:
        csr = _load_csr(args.csr)
        if not args.sign_with:
            raise CliInputError(
                "--csr needs --sign-with: without the CSR's key only an access certificate "
                "can sign the Full PKI Request"
            )
        signer = _access_signer(args)
    request = build_full_request(signer=signer, requests=[csr])
    try:
        Path(args.out).write_bytes(request.der)
    except OSError as exc:
        raise CliInputError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    nonce = request.sender_nonce.hex() if request.sender_nonce else ""
    print(
        f"wrote Full PKI Request for {csr.subject.rfc4514_string()} to {args.out} "
        f"(transactionId={request.transaction_id} senderNonce={nonce})"
    )
    return 0


KEY_TYPES: dict[str, Callable[[], Any]] = {
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa3072": lambda: rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "rsa4096": lambda: rsa.generate_private_key(public_exponent=65537, key_size=4096),
    "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
}


def _enroll_csr(
    key: Any, email: str, name: str | None, config_path: str | None = None
) -> x509.CertificateSigningRequest:
    """Subject from the configured certSubjectDN template (docs/configuration.md), else
    ``CN=<name or email>``; SAN rfc822Name = the email (the Totemo CN/E replacement)."""
    emails = [email]
    if config_path:
        from config.properties import load

        pki = load(config_path).pki
        assert pki is not None
        subject, emails = pki.subject_for(email, name)
    else:
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name or email)])
    san = x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return builder.add_extension(san, critical=False).sign(key, hashes.SHA256())


def _connection(args: argparse.Namespace) -> tuple[TransportSettings, x509.Name | None]:
    """TransportSettings and issuer DN from --config or the explicit flags."""
    from cmc.transport.http import TransportSettings

    if args.config:
        from cmc.client_config import transport_settings
        from config.properties import load

        pki = load(args.config).pki
        if pki is None:
            raise CliInputError(f"{args.config}: security.pkiConnection.enabled is not true")
        return transport_settings(pki), pki.issuer_dn
    missing = [flag for flag in ("url", "p12", "roots") if not getattr(args, flag)]
    if missing:
        raise CliInputError("cmc enroll needs --config or " + ", ".join(f"--{m}" for m in missing))
    try:
        roots = tuple(x509.load_pem_x509_certificates(_read(args.roots, "roots")))
    except ValueError as exc:
        raise CliInputError(f"{args.roots} holds no PEM certificates: {exc}") from None
    issuer_dn = None
    if args.issuer_dn:
        try:
            issuer_dn = x509.Name.from_rfc4514_string(args.issuer_dn)
        except ValueError as exc:
            raise CliInputError(f"--issuer-dn {args.issuer_dn!r}: {exc}") from None
    password = None
    if args.p12_password_file:
        password = _read(args.p12_password_file, "password file").rstrip(b"\r\n")
    settings = TransportSettings(
        url=args.url,
        method=args.method,
        encode_base64=args.base64,
        access_p12=_read(args.p12, "access PKCS#12"),
        access_p12_password=password,
        trust_anchors=roots,
    )
    return settings, issuer_dn


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _write(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    try:
        with open(path, "xb" if exclusive else "wb", opener=_opener(mode)) as handle:
            handle.write(data)
    except FileExistsError:
        raise CliInputError(f"{path} exists: refusing to overwrite a private key") from None
    except OSError as exc:
        raise CliInputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _opener(mode: int) -> Callable[[str, int], int]:
    import os

    return lambda path, flags: os.open(path, flags, mode)


def cmd_enroll(args: argparse.Namespace) -> int:
    from cmc.client import EnrollmentPending, client_from_settings
    from cmc.errors import CMCFailure
    from cmc.transport.errors import TransportRefused

    settings, issuer_dn = _connection(args)
    key_out = Path(args.key_out or f"{args.email}.key.pem")
    cert_out = Path(args.cert_out or f"{args.email}.cert.pem")
    key = KEY_TYPES[args.key_type]()
    csr = _enroll_csr(key, args.email, args.name, args.config)
    client = client_from_settings(
        settings, issuer_dn=issuer_dn, sign_with_access=not args.self_signed
    )
    # The key is on disk before the request leaves: a pending enrolment must keep it.
    _write(
        key_out,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
        exclusive=True,
    )
    try:
        with client:
            result = client.enroll(csr, key)
    except EnrollmentPending as pending:
        state = cert_out.with_name(cert_out.name + ".pending.json")
        _write(state, json.dumps(pending.pending.to_dict(), indent=2).encode() + b"\n")
        print(
            f"pending: {args.email} awaits the CA (transactionId="
            f"{pending.pending.transaction_id}, token={pending.pend_token.hex()}, ask again "
            f"after {pending.pend_time.isoformat()}); key {key_out}, state {state}"
        )
        return 3
    except (CMCFailure, TransportRefused):
        # The CA refused, or never accepted the request: no certificate will match this key.
        # Other failures (timeouts, a response we reject) keep it: the CA may have issued.
        key_out.unlink(missing_ok=True)
        raise
    _write(cert_out, _pem(result.certificate))
    if args.chain_out:
        _write(Path(args.chain_out), _pem(*result.chain))
    cert = result.certificate
    print(
        f"enrolled {args.email}: serial {cert.serial_number:x} from "
        f"{cert.issuer.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}; "
        f"key {key_out}, certificate {cert_out}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    inspection = inspect_bytes(_read(args.file, "file"))
    if args.json:
        json.dump(to_dict(inspection), sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        print(to_text(inspection))
    return 0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cmc", help="CMC messages (RFC 5272): build requests, inspect files"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    request = commands.add_parser("request", help="write a DER Full PKI Request")
    source = request.add_mutually_exclusive_group(required=True)
    source.add_argument("--key", help="private key (PEM/DER): a CSR is made and signed with it")
    source.add_argument("--csr", help="existing PKCS#10 request (PEM/DER)")
    request.add_argument("--email", help="rfc822Name for the SAN (and CN without --subject)")
    request.add_argument("--subject", help="subject DN in RFC 4514 form, e.g. 'CN=Alice,O=Ex'")
    request.add_argument("--sign-with", help="access certificate PKCS#12 to sign the request")
    request.add_argument("--password-file", help="file holding the PKCS#12 password")
    request.add_argument("--out", required=True, help="where to write the DER request")
    request.set_defaults(func=cmd_request)

    inspect = commands.add_parser("inspect", help="show a CMC/PKCS#10 file (DER, PEM, base64)")
    inspect.add_argument("file")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=cmd_inspect)

    enroll = commands.add_parser(
        "enroll",
        help="generate a key, enrol it at the configured CA, write key and certificate",
        description=(
            "Generate a key and a CSR (CN and rfc822Name from --email, CN from --name when "
            "given), send a Full PKI Request signed by the access certificate over HTTPS "
            "(RFC 5273) and validate the answer. Exit 0 issued, 2 failed, 3 pending (token "
            "printed, state saved to CERT.pending.json)."
        ),
    )
    enroll.add_argument("--config", help="properties file with security.pkiConnection.*")
    enroll.add_argument("--email", required=True, help="the user's mail address")
    enroll.add_argument("--name", help='"Given Surname" for the CN (default: the address)')
    enroll.add_argument("--key-type", choices=sorted(KEY_TYPES), default="rsa2048")
    enroll.add_argument("--key-out", help="private key PEM to write (default EMAIL.key.pem)")
    enroll.add_argument("--cert-out", help="certificate PEM to write (default EMAIL.cert.pem)")
    enroll.add_argument("--chain-out", help="also write the issuer chain (PEM) here")
    enroll.add_argument("--url", help="CMC endpoint, e.g. https://ra.example/ws/cmc?account=a")
    enroll.add_argument("--p12", help="access certificate PKCS#12 (TLS client auth, signer)")
    enroll.add_argument("--p12-password-file", help="file holding the PKCS#12 password")
    enroll.add_argument("--roots", help="PEM file of the CA's root certificates")
    enroll.add_argument("--issuer-dn", help="accept only certificates from this issuer DN")
    enroll.add_argument("--method", choices=("POST", "GET"), default="POST")
    enroll.add_argument("--base64", action="store_true", help="send the request base64-encoded")
    enroll.add_argument(
        "--self-signed",
        action="store_true",
        help="sign the request with the new key instead of the access certificate",
    )
    enroll.set_defaults(func=cmd_enroll)
