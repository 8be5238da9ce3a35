"""The ``ra:`` section of ca.yaml: the RA service (REST API, JWT, DNS checks, mail, PKCS#12).

Every key is optional; without an ``ra:`` section the CA runs as before (CMC and the CLI) with
the defaults below. The REST API listens only when ``ra.listen`` (or ``ca serve --ra-listen``)
names an address.

    ra:
      listen: 127.0.0.1:8444            # REST API over HTTPS (server certificate of ca serve)
      public_url: https://ra.example.com:8444   # links in mails (default: https://<listen>)
      jwt: {issuer: "cmcgate CA", audience: "REST API", lifetime_hours: 8,
            secret_file: ra-jwt.key}
      api_key_rollover_days: 7
      domains: {token_days: 30, validation_days: 30, check_minutes: 60,
                txt_label: _cmcgate-challenge}
      dns: {nameservers: [127.0.0.1], port: 53, timeout_seconds: 5}
      caa_identities: [ca.example.com]  # RFC 9495 issuemail values that name this CA
      mail: {host: 127.0.0.1, port: 25, starttls: false, from: "CA <ca@example.com>",
             username: ..., password_file: ...}
      notifications: {expiry_warning_days: [30, 7]}
      challenge_hours: 24
      pkcs12: {retention_days: 90}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from ca.settings.yamlnodes import Section, SettingsError
from config.values import is_number

RA_KEYS = ("listen", "public_url", "jwt", "api_key_rollover_days", "domains", "dns",
           "caa_identities", "mail", "notifications", "challenge_hours", "pkcs12")  # fmt: skip
_CAA_ID_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")
_LABEL_RE = re.compile(r"^_?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class JwtSettings:
    issuer: str = "cmcgate CA"
    audience: str = "REST API"
    lifetime_hours: int = 8
    #: HS256 secret the RA signs its JWTs with; made (0600) on first use when missing
    secret_file: Path = Path("ra-jwt.key")


@dataclass(frozen=True)
class DomainSettings:
    #: days a domain's TXT token may be published in before a new one is needed
    token_days: int = 30
    #: days a successful DNS check keeps the domain validated (renewed by later checks)
    validation_days: int = 30
    #: minutes between the scheduler's checks of pending and soon-expiring domains
    check_minutes: int = 60
    #: the TXT record is published at ``<txt_label>.<domain>``
    txt_label: str = "_cmcgate-challenge"


@dataclass(frozen=True)
class DnsSettings:
    #: empty: the system resolver (/etc/resolv.conf)
    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout_seconds: int = 5


@dataclass(frozen=True)
class MailSettings:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    sender: str = "cmcgate CA <ca@localhost>"
    username: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class NotificationSettings:
    #: a warning mail this many days before a certificate expires (each number once)
    expiry_warning_days: tuple[int, ...] = (30, 7)


@dataclass(frozen=True)
class Pkcs12Settings:
    #: days an unpicked server-generated PKCS#12 stays downloadable before it is purged
    retention_days: int = 90


@dataclass(frozen=True)
class RaSettings:
    listen: tuple[str, int] | None = None
    public_url: str | None = None
    jwt: JwtSettings = field(default_factory=JwtSettings)
    api_key_rollover_days: int = 7
    domains: DomainSettings = field(default_factory=DomainSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    caa_identities: tuple[str, ...] = ()
    mail: MailSettings = field(default_factory=MailSettings)
    #: ``ra.mail`` is in ca.yaml: without it the CA sends no order confirmations or expiry
    #: warnings (a gateway's automatic enrolments must not mail every user by surprise); the
    #: processes that need a mail (challenge, PKCS#12 PIN) still try the default server
    mail_configured: bool = False
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    challenge_hours: int = 24
    pkcs12: Pkcs12Settings = field(default_factory=Pkcs12Settings)

    def link_base(self, listen: tuple[str, int] | None = None) -> str:
        """Where mails point to: ``public_url``, else ``https://<listen>``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = listen or self.listen or ("127.0.0.1", 8444)
        return f"https://{f'[{host}]' if ':' in host else host}:{port}"


def parse_ra(top: Section, directory: Path) -> RaSettings:
    """``ra:`` of ca.yaml (relative files are relative to the CA directory)."""
    sec = top.section("ra", RA_KEYS)
    if sec is None:
        return RaSettings(jwt=JwtSettings(secret_file=directory / "ra-jwt.key"))
    listen = None
    if sec.text("listen") is not None:
        listen = _listen(sec, sec.req_text("listen"))
    public_url = sec.text("public_url")
    if public_url is not None and not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
        raise sec.error("public_url", "ra.public_url must be an http:// or https:// URL")
    return RaSettings(
        listen=listen,
        public_url=public_url.rstrip("/") if public_url else None,
        jwt=_jwt(sec, directory),
        api_key_rollover_days=sec.integer("api_key_rollover_days", 7, 0, 365),
        domains=_domains(sec),
        dns=_dns(sec),
        caa_identities=_caa_identities(sec),
        mail=_mail(sec, directory),
        mail_configured=sec.has("mail"),
        notifications=_notifications(sec),
        # S/MIME BR 3.2.2.2: the random value of a mailbox challenge is valid for <= 24 h
        challenge_hours=sec.integer("challenge_hours", 24, 1, 24),
        pkcs12=_pkcs12(sec),
    )


def _listen(sec: Section, text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not is_number(port) or not 0 <= int(port) < 65536:
        raise sec.error("listen", f"ra.listen {text!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def _jwt(ra: Section, directory: Path) -> JwtSettings:
    sec = ra.section("jwt", ("issuer", "audience", "lifetime_hours", "secret_file"))
    if sec is None:
        return JwtSettings(secret_file=directory / "ra-jwt.key")
    secret = Path(sec.text("secret_file", default="ra-jwt.key") or "ra-jwt.key").expanduser()
    return JwtSettings(
        issuer=sec.text("issuer", default="cmcgate CA") or "cmcgate CA",
        audience=sec.text("audience", default="REST API") or "REST API",
        lifetime_hours=sec.integer("lifetime_hours", 8, 1, 24 * 7),
        secret_file=secret if secret.is_absolute() else directory / secret,
    )


def _domains(ra: Section) -> DomainSettings:
    sec = ra.section("domains", ("token_days", "validation_days", "check_minutes", "txt_label"))
    if sec is None:
        return DomainSettings()
    label = (sec.text("txt_label", default="_cmcgate-challenge") or "").lower()
    if not _LABEL_RE.match(label):
        raise sec.error("txt_label", f"ra.domains.txt_label {label!r} is not one DNS label")
    return DomainSettings(
        # S/MIME BR 3.2.2.1 -> TLS BR 3.2.2.4.7: a DNS random value is valid for <= 30 days
        token_days=sec.integer("token_days", 30, 1, 30),
        # S/MIME BR 3.2.2: domain validation data may be reused for at most 398 days
        validation_days=sec.integer("validation_days", 30, 1, 398),
        check_minutes=sec.integer("check_minutes", 60, 1, 24 * 60),
        txt_label=label,
    )


def _dns(ra: Section) -> DnsSettings:
    sec = ra.section("dns", ("nameservers", "port", "timeout_seconds"))
    if sec is None:
        return DnsSettings()
    servers = []
    for text, line in sec.text_list("nameservers"):
        try:
            servers.append(str(ip_address(text)))
        except ValueError:
            problem = f"nameserver {text!r} is not an IP address"
            raise SettingsError(sec.path, line, problem) from None
    return DnsSettings(
        nameservers=tuple(servers),
        port=sec.integer("port", 53, 1, 65535),
        timeout_seconds=sec.integer("timeout_seconds", 5, 1, 60),
    )


def _caa_identities(ra: Section) -> tuple[str, ...]:
    out = []
    for text, line in ra.text_list("caa_identities"):
        value = text.strip().lower().rstrip(".")
        if not _CAA_ID_RE.match(value):
            raise SettingsError(ra.path, line, f"CAA identity {text!r} is not a domain name")
        out.append(value)
    return tuple(dict.fromkeys(out))


def _mail(ra: Section, directory: Path) -> MailSettings:
    sec = ra.section("mail", ("host", "port", "starttls", "from", "username", "password_file"))
    if sec is None:
        return MailSettings()
    sender = sec.text("from", default="cmcgate CA <ca@localhost>") or ""
    if "@" not in sender:
        raise sec.error("from", "ra.mail.from must contain a mail address")
    password_file = sec.text("password_file")
    username = sec.text("username")
    if (username is None) != (password_file is None):
        raise sec.error(None, "ra.mail needs both username and password_file, or neither")
    pw = Path(password_file).expanduser() if password_file else None
    return MailSettings(
        host=sec.text("host", default="127.0.0.1") or "127.0.0.1",
        port=sec.integer("port", 25, 1, 65535),
        starttls=sec.boolean("starttls", False),
        sender=sender,
        username=username,
        password_file=(pw if pw.is_absolute() else directory / pw) if pw else None,
    )


def _notifications(ra: Section) -> NotificationSettings:
    sec = ra.section("notifications", ("expiry_warning_days",))
    if sec is None or not sec.has("expiry_warning_days"):
        return NotificationSettings()
    days = []
    for text, line in sec.text_list("expiry_warning_days"):
        if not is_number(text) or not 1 <= int(text) <= 365:
            raise SettingsError(sec.path, line, f"expiry warning day {text!r}: a number 1..365")
        days.append(int(text))
    return NotificationSettings(tuple(sorted(set(days), reverse=True)))


def _pkcs12(ra: Section) -> Pkcs12Settings:
    sec = ra.section("pkcs12", ("retention_days",))
    if sec is None:
        return Pkcs12Settings()
    return Pkcs12Settings(retention_days=sec.integer("retention_days", 90, 1, 3650))
