"""The typed configuration :func:`config.properties.load` returns (all frozen)."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509

from config.errors import ConfigIssue, SecretError
from config.policy import Policy
from config.smime import ContentCipher, RsaKeyTransport
from config.subject import ProductKind, subject_for
from config.values import HostPort, IPNetwork

MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is: a file (first line, trailing newline removed) or an env variable.

    The secret itself is never part of the configuration; :meth:`read` fetches it when a
    service needs it.
    """

    file: Path | None = None
    env: str | None = None

    def read(self) -> bytes:
        if self.file is not None:
            try:
                with self.file.open("rb") as handle:
                    data = handle.read(MAX_SECRET_BYTES)
            except OSError as exc:
                raise SecretError(f"{self.file}: cannot read: {exc.strerror}") from None
            return data.splitlines()[0] if data.strip(b"\r\n") else b""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise SecretError(f"environment variable {self.env} is not set")
            return value.encode("utf-8")
        raise SecretError("no secret configured")

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment {self.env}"


@dataclass(frozen=True)
class Validity:
    """``1y``, ``24m``, ``365d`` from the URL query."""

    count: int
    unit: str  # "y", "m" or "d"

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    @property
    def approx_days(self) -> int:
        return self.count * {"y": 365, "m": 30, "d": 1}[self.unit]


@dataclass(frozen=True)
class CmcQuery:
    """The query of ``connection.ssl.url``: the RA account, the product, the validity."""

    account: str
    product: str
    validity: Validity | None = None
    other: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PkiConnection:
    """``security.pkiConnection.*`` and ``connection.ssl.*``, plus ``cmcgate.pki.*``."""

    type: str  # "rfc2797" or "rfc5272": the same protocol family
    protocol: str  # "https" or "http"
    server_name: str
    server_port: int
    path: str  # connection.ssl.url as written, e.g. /ws/cmc?account=...&product=...
    query: CmcQuery
    request_method: str  # "POST" or "GET"
    encode_base64: bool
    issuer_dn: x509.Name
    subject_template: x509.Name
    product_kind: ProductKind
    product_kind_source: str  # "cmcgate.pki.productKind", "product", or "template"
    enrol_internal_users: bool
    fetch_for_recipients: bool
    access_certificate: Path
    access_password: SecretRef | None
    trusted_roots: tuple[Path, ...]
    allow_insecure_http: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    #: ``cmcgate.pki.directory.*``: where the PKI publishes what it issues (recipients'
    #: certificates are looked up there when ``fetch_for_recipients``)
    directory: LdapDirectory | None = None

    @property
    def url(self) -> str:
        """protocol + serverName + ":" + serverPort + url, as Totemo builds it."""
        host = f"[{self.server_name}]" if ":" in self.server_name else self.server_name
        return f"{self.protocol}://{host}:{self.server_port}{self.path}"

    def subject_for(
        self, email: str, display_name: str | None = None
    ) -> tuple[x509.Name, list[str]]:
        return subject_for(
            self.subject_template, email=email, display_name=display_name, kind=self.product_kind
        )


class RevocationCheck(enum.StrEnum):
    """What an unreachable CRL means (``cmcgate.gateway.revocationCheck``)."""

    SOFT = "soft"  # use the certificate, log a warning
    HARD = "hard"  # temporary failure (4xx) for mail that needs the certificate
    OFF = "off"  # no CRL is fetched


class NextHopTls(enum.StrEnum):
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered
    REQUIRED = "required"  # no STARTTLS, no delivery
    OFF = "off"  # never STARTTLS


@dataclass(frozen=True)
class GatewaySettings:
    listen: HostPort
    next_hop: HostPort
    next_hop_tls: NextHopTls = NextHopTls.OPPORTUNISTIC
    next_hop_ca_file: Path | None = None
    hostname: str | None = None
    internal_domains: tuple[str, ...] = ()
    max_message_size: int = 50 * 1024 * 1024
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    require_starttls: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    auth_users_file: Path | None = None
    authenticated_may_relay: bool = True
    #: every client must authenticate (needs auth_users_file)
    require_auth: bool = False
    #: AUTH also without STARTTLS (passwords in clear on the wire)
    allow_plaintext_auth: bool = False
    #: enrolment state (pending CMC requests, key-pool claims) and the quarantine
    state_dir: Path = Path("/var/lib/cmcgate/state")
    #: anchors for verifying inbound signatures and recipients' certificates (besides the PKI's)
    trusted_roots: tuple[Path, ...] = ()
    #: SMTP worker processes sharing the listen port (SO_REUSEPORT); 1 = one process
    workers: int = 1
    #: CRL checks of recipients' and signers' certificates (gateway.certs.revocation_policy)
    revocation_check: RevocationCheck = RevocationCheck.SOFT
    revocation_timeout: float = 5.0
    #: SMTP sessions served at once (per worker process); more get 421 4.7.0
    max_sessions: int = 100
    #: seconds a client may stay silent (between commands, within DATA); then 421 4.4.2
    idle_timeout: float = 300.0

    def is_internal(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return any(domain == d or domain.endswith("." + d) for d in self.internal_domains)


@dataclass(frozen=True)
class DkimDomain:
    domain: str
    selector: str
    key_file: Path


@dataclass(frozen=True)
class StoreSettings:
    dsn: str


@dataclass(frozen=True)
class KeyBackendSettings:
    """Where users' private keys live; :meth:`backend_kwargs` is for backend_from_settings."""

    kind: str  # "software" or "pkcs11"
    directory: Path | None = None
    passphrase: SecretRef | None = None
    module: Path | None = None
    token_label: str | None = None
    pin: SecretRef | None = None
    pool_size: int = 4

    def backend_kwargs(self) -> dict[str, str | int]:
        kwargs: dict[str, str | int] = {}
        if self.kind == "software":
            kwargs["directory"] = str(self.directory)
            if self.passphrase is not None and self.passphrase.file is not None:
                kwargs["passphrase_file"] = str(self.passphrase.file)
            elif self.passphrase is not None and self.passphrase.env is not None:
                kwargs["passphrase_env"] = self.passphrase.env
            return kwargs
        kwargs["module_path"] = str(self.module)
        kwargs["token_label"] = str(self.token_label)
        kwargs["pool_size"] = self.pool_size
        if self.pin is not None and self.pin.file is not None:
            kwargs["pin_file"] = str(self.pin.file)
        elif self.pin is not None and self.pin.env is not None:
            kwargs["pin_env"] = self.pin.env
        return kwargs


@dataclass(frozen=True)
class LdapDirectory:
    name: str
    url: str
    base: str
    bind_dn: str | None = None
    password: SecretRef | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class LookupSettings:
    directories: tuple[LdapDirectory, ...] = ()
    negative_cache_ttl: int = 3600  # seconds


@dataclass(frozen=True)
class PublishSettings:
    """``cmcgate.publish.ldap.*``: the directory the gateway writes enrolled certificates to."""

    url: str
    base: str
    bind_dn: str | None = None
    password: SecretRef | None = None
    timeout: float = 5.0


@dataclass(frozen=True)
class EnrolmentSettings:
    renew_days_before_expiry: int = 30
    key_pool_size: int = 0
    key_type: str = "rsa3072"


class SignatureFormat(enum.StrEnum):
    DETACHED = "detached"  # multipart/signed: readable without S/MIME support
    OPAQUE = "opaque"  # application/pkcs7-mime; smime-type=signed-data


@dataclass(frozen=True)
class SmimeSettings:
    """``cmcgate.smime.*``: how outgoing mail is signed and encrypted."""

    content_cipher: ContentCipher = ContentCipher.AES256_CBC
    rsa_key_transport: RsaKeyTransport = RsaKeyTransport.PKCS1V15
    signature_format: SignatureFormat = SignatureFormat.DETACHED


@dataclass(frozen=True)
class Config:
    """A complete, valid configuration; ``origins`` maps each key set to its line."""

    source: Path
    pki: PkiConnection | None
    gateway: GatewaySettings
    policy: Policy
    policy_file: Path | None = None
    dkim: tuple[DkimDomain, ...] = ()
    store: StoreSettings = StoreSettings("sqlite:////var/lib/cmcgate/cmcgate.db")
    keys: KeyBackendSettings | None = None
    lookup: LookupSettings = LookupSettings()
    enrolment: EnrolmentSettings = EnrolmentSettings()
    publish: PublishSettings | None = None
    metrics_listen: HostPort | None = None
    smime: SmimeSettings = SmimeSettings()
    warnings: tuple[ConfigIssue, ...] = ()
    origins: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), compare=False)
