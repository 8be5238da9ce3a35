"""``cmcgate cmc ...`` commands: build a Full PKI Request, inspect CMC files.

The only module of ``cmc`` that touches files.  Placeholder: ``cmc enroll --config FILE
--email E`` (request, send over RFC 5273, poll, validate) arrives with ``cmc.client``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cmc.errors import CmcError
from cmc.inspect import inspect_bytes, to_dict, to_text
from cmc.requests import build_full_request
from cmc.signing import Signer


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
    from cmc.pkcs12 import load_pkcs12

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
    # Placeholder: `cmc enroll --config FILE --email E` is registered here with cmc.client.
