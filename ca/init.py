"""``cmcgate ca init``: keys in the HSM, root + S/MIME issuing CA, ca.yaml, database, CRLs.

The directory it writes::

    ca.yaml            settings (accounts, products, key references) — edit to taste
    root-ca.pem        root CA certificate (the trust anchor admins import)
    issuing-ca.pem     S/MIME issuing CA certificate
    ca-chain.pem       issuing + root, for openssl -CAfile / -untrusted
    certs/*.cer        DER copies served at the AIA caIssuers URLs
    crl/*.crl          CRLs served at the CRL distribution point URLs
    ca.db              order store and audit log (SQLite, unless a DSN is configured)

Keys never leave the backend: the files hold only labels.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ca import crl as crl_module
from ca.hierarchy import build_issuing_ca, build_root_ca
from ca.keys import KeyBackend, KeyType, backend_from_settings
from ca.settings.loader import dump_default_ca_yaml, load_ca_settings
from ca.settings.types import CaSettings
from ca.store.audit import AuditEvent, append_audit
from ca.store.orders import Store
from config.errors import CmcgateError


class InitRefused(CmcgateError):
    """The directory holds a CA already (use --force) or the options are inconsistent."""


def _name(text: str) -> object:
    from cryptography import x509

    return x509.Name.from_rfc4514_string(text)


def initialise(
    directory: Path,
    *,
    key_backend: str = "pkcs11",
    pkcs11_module: str | None = None,
    token_label: str = "cmcgate",  # noqa: S107 - a token label, not a secret
    pin_file: Path | None = None,
    key_type: KeyType = KeyType.RSA3072,
    force: bool = False,
    progress: Callable[[str], None] = print,
    now: datetime | None = None,
    **yaml_options: object,
) -> CaSettings:
    """Create a CA in ``directory``; returns its loaded settings.

    Atomic: everything is made in a staging directory inside ``directory`` and moved into
    place at the end, ``ca.yaml`` last. A failure (a wrong PIN, a full token...) leaves no
    ``ca.yaml``, no files and no keys of this attempt behind, so the retry needs no --force.
    """
    directory = directory.resolve()
    ca_yaml = directory / "ca.yaml"
    if ca_yaml.exists() and not force:
        raise InitRefused(f"{ca_yaml} exists: a CA is there already (use --force to replace it)")
    options: dict[str, object] = dict(yaml_options)
    if key_backend == "pkcs11":
        if pin_file is None:
            raise InitRefused("a PKCS#11 CA needs --pin-file (the token's user PIN)")
        options.update(
            key_backend="pkcs11",
            pkcs11_module=pkcs11_module,
            token_label=token_label,
            pin_file=str(Path(pin_file).resolve()),
        )
    elif key_backend == "software":
        options.update(key_backend="software", software_dir="keys", passphrase_file="keys.pass")
    else:
        raise InitRefused(f"unknown key backend {key_backend!r}: use pkcs11 or software")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = Path(tempfile.mkdtemp(prefix=".init-", dir=directory))
    try:
        _build(staging, options, key_type, force=force, progress=progress, now=now)
        _install(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    settings = load_ca_settings(ca_yaml)
    progress(f"CA ready in {directory}: trust anchor {settings.ca.root.certificate.name}")
    return settings


def _build(
    staging: Path,
    options: dict[str, object],
    key_type: KeyType,
    *,
    force: bool,
    progress: Callable[[str], None],
    now: datetime | None,
) -> None:
    """The whole CA in ``staging``; keys generated here are deleted again on failure."""
    if options["key_backend"] == "software":
        fd = os.open(staging / "keys.pass", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    ca_yaml = staging / "ca.yaml"
    crl_module.write_atomically(
        ca_yaml,
        dump_default_ca_yaml(
            root_key_type=key_type.value,
            issuing_key_type=key_type.value,
            **options,  # type: ignore[arg-type]
        ).encode(),
    )
    settings = load_ca_settings(ca_yaml)
    keys = backend_from_settings(settings.ca.keys.backend, **settings.ca.keys.backend_kwargs())
    generated: list[str] = []
    try:
        _make_hierarchy(settings, keys, generated, force=force, progress=progress, now=now)
    except BaseException:
        for label in generated:
            with contextlib.suppress(Exception):
                keys.delete(label)
        raise
    finally:
        keys.close()


def _install(staging: Path, directory: Path) -> None:
    """Move what ``staging`` holds into ``directory``, replacing what is there, ca.yaml last.

    An old database's WAL and shared-memory files go first: SQLite would apply a stale WAL to
    the new database.
    """
    for stale in ("ca.db-wal", "ca.db-shm"):
        (directory / stale).unlink(missing_ok=True)
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == "ca.yaml"):
        target = directory / entry.name
        if entry.is_dir() and target.is_dir():
            old = directory / f".{entry.name}.old-{secrets.token_hex(4)}"
            target.rename(old)
            entry.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
    staging.rmdir()


def _fresh_key(
    keys: KeyBackend, label: str, key_type: KeyType, force: bool, generated: list[str]
) -> object:
    if keys.exists(label):
        if not force:
            raise InitRefused(f"key {label!r} exists in the {keys.kind} backend (use --force)")
        keys.delete(label)
    key = keys.generate(label, key_type)
    generated.append(label)
    return key


def _make_hierarchy(
    settings: CaSettings,
    keys: KeyBackend,
    generated: list[str],
    *,
    force: bool,
    progress: Callable[[str], None],
    now: datetime | None,
) -> None:
    ca = settings.ca
    now = now or datetime.now(UTC)
    base = ca.base_url.rstrip("/")
    progress(
        f"generating root CA key {ca.root.key_label} ({ca.root.key_type.value}) in {keys.kind}"
    )
    root_key = _fresh_key(keys, ca.root.key_label, ca.root.key_type, force, generated)
    progress(f"generating issuing CA key {ca.issuing.key_label} ({ca.issuing.key_type.value})")
    issuing_key = _fresh_key(keys, ca.issuing.key_label, ca.issuing.key_type, force, generated)
    root_subject = ca.root.subject or "CN=cmcgate Root CA,O=cmcgate,C=CH"
    issuing_subject = ca.issuing.subject or "CN=cmcgate S/MIME Issuing CA,O=cmcgate,C=CH"
    progress("signing root and issuing CA certificates")
    root = build_root_ca(root_key, _name(root_subject), now=now)  # type: ignore[arg-type]
    issuing = build_issuing_ca(
        issuing_key.public_key(),  # type: ignore[attr-defined]
        _name(issuing_subject),  # type: ignore[arg-type]
        root,
        root_key,  # type: ignore[arg-type]
        now=now,
        crl_url=f"{base}/crl/root.crl",
        ca_issuers_url=f"{base}/certs/root-ca.cer",
    )
    pem = serialization.Encoding.PEM
    crl_module.write_atomically(ca.root.certificate, root.public_bytes(pem))
    crl_module.write_atomically(ca.issuing.certificate, issuing.public_bytes(pem))
    crl_module.write_atomically(
        ca.directory / "ca-chain.pem", issuing.public_bytes(pem) + root.public_bytes(pem)
    )
    der = serialization.Encoding.DER
    crl_module.write_atomically(ca.directory / "certs" / "root-ca.cer", root.public_bytes(der))
    crl_module.write_atomically(
        ca.directory / "certs" / "issuing-ca.cer", issuing.public_bytes(der)
    )
    store = Store.open(ca.database, audit_hmac_key=ca.audit_hmac_key_file)
    try:
        store.create_all()
        append_audit(
            store,
            AuditEvent.INIT,
            "cmcgate ca init",
            issuing.subject.rfc4514_string(),
            {
                "root": root.subject.rfc4514_string(),
                "root_serial": f"{root.serial_number:x}",
                "issuing_serial": f"{issuing.serial_number:x}",
                "key_backend": keys.kind,
                "key_type": ca.issuing.key_type.value,
            },
        )
    finally:
        store.close()
    from ca.authority import CertificateAuthority

    authority = CertificateAuthority.open(settings.path)
    try:
        root_crl = authority.root_crl().public_bytes(der)
        crl_module.write_atomically(ca.directory / "crl" / "root.crl", root_crl)
        authority.write_crl()
    finally:
        authority.close()
