"""ca.yaml: the bundled CA's accounts, products and its own settings, as typed frozen values.

    settings = load_ca_settings("/etc/cmcgate/ca.yaml")
    product = settings.product("totemo-persogold")

Every problem is reported as ``FILE:LINE: problem`` (:class:`SettingsError`); unknown keys are
errors with a suggestion. Relative paths are taken relative to the file's directory; the
database defaults to ``sqlite:///<ca directory>/ca.db``. ``dump_default_ca_yaml`` (in
:mod:`ca.settings.default`) writes the commented file ``cmcgate ca init`` starts from.
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509
from yaml.nodes import Node

from ca.keys.base import KeyType
from ca.keys.errors import KeyBackendError
from ca.settings.default import dump_default_ca_yaml
from ca.settings.ra import parse_ra
from ca.settings.types import (
    AccountSettings,
    Approval,
    CaKeyRef,
    CaSection,
    CaSettings,
    KeyGeneration,
    KeySettings,
    LdapSettings,
    Organisation,
    Pkcs11Settings,
    ProductSettings,
    Profile,
    RaCertificate,
    SoftwareKeySettings,
    Validity,
)
from ca.settings.yamlnodes import Section, SettingsError, compose, line_of
from ca.store.db import default_dsn
from config.values import is_number

__all__ = [
    "AccountSettings", "Approval", "CaKeyRef", "CaSection", "CaSettings", "KeySettings",
    "LdapSettings", "Organisation", "Pkcs11Settings", "ProductSettings", "Profile",
    "RaCertificate", "SettingsError", "SoftwareKeySettings", "Validity", "dump_default_ca_yaml",
    "load_ca_settings", "parse_ca_settings",
]  # fmt: skip

#: S/MIME BR 6.3.2: subscriber certificates are valid for at most 825 days.
MAX_VALIDITY_DAYS = 825
#: S/MIME BR 4.9.7: a subscriber CRL's nextUpdate is at most 10 days after thisUpdate.
MAX_CRL_HOURS = 240
#: Key types a product accepts when it lists none.
DEFAULT_KEY_TYPES = (KeyType.RSA2048, KeyType.RSA3072, KeyType.RSA4096, KeyType.EC_P256,
                     KeyType.EC_P384)  # fmt: skip
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ORG_ID_RE = re.compile(r"^[A-Z]{3}[A-Z]{2}(\+[A-Z0-9]{1,3})?-.+$")
_LDAP_DN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*=[^,=]+(,\s*[A-Za-z][A-Za-z0-9-]*=[^,=]+)*$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


def load_ca_settings(path: str | Path) -> CaSettings:
    """Read and check ca.yaml; SettingsError (``FILE:LINE: problem``) for anything wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as ex:
        raise SettingsError(str(p), None, f"not UTF-8 text: {ex.reason}") from None
    except OSError as ex:
        raise SettingsError(str(p), None, f"cannot read: {ex.strerror}") from None
    return parse_ca_settings(text, str(p), base_dir=p.resolve().parent)


def parse_ca_settings(
    text: str, filename: str = "ca.yaml", *, base_dir: Path | None = None
) -> CaSettings:
    """Parse ca.yaml text; relative paths are taken relative to ``base_dir`` (default: cwd)."""
    base = (base_dir or Path.cwd()).resolve()
    root = compose(text, filename)
    if root is None:
        raise SettingsError(filename, 1, "empty file: expected ca, accounts and products")
    top = Section(filename, root, "", ("version", "ca", "accounts", "products", "ra"))
    top.integer("version", 1, 1, 1)
    ca_sec = top.section("ca", _CA_KEYS, required=True)
    assert ca_sec is not None  # noqa: S101 - required=True
    ca = _ca(ca_sec, base)
    products = _products(top)
    accounts = _accounts(top, {p.id for p in products})
    return CaSettings(Path(filename), ca, accounts, products, parse_ra(top, ca.directory))


_CA_KEYS = ("directory", "database", "listen", "base_url", "keys", "root", "issuing", "crl",
            "audit", "ldap")  # fmt: skip
_KEYREF_KEYS = ("key_label", "key_type", "certificate", "subject")


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _opt_path(base: Path, value: str | None) -> Path | None:
    return None if value is None else _path(base, value)


def _ca(sec: Section, base: Path) -> CaSection:
    directory = _path(base, sec.text("directory", default=".") or ".")
    database = sec.text("database") or default_dsn(str(directory))
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        rel = database[len("sqlite:///") :]
        if rel and rel != ":memory:":
            database = f"sqlite:///{directory / rel}"
    elif "://" not in database:
        raise sec.error("database", "ca.database must be a DSN like sqlite:///ca.db")
    listen = sec.text("listen", default="127.0.0.1:8480") or ""
    host, _, port_text = listen.rpartition(":")
    if not host or not is_number(port_text) or not 0 < int(port_text) < 65536:
        raise sec.error("listen", f"ca.listen {listen!r} must be HOST:PORT")
    base_url = sec.req_text("base_url").rstrip("/")
    if not re.match(r"^http://[^/\s]+(/\S*)?$", base_url):
        raise sec.error(
            "base_url", "ca.base_url must be an http:// URL (S/MIME BR: CRL and AIA URLs are HTTP)"
        )
    crl = sec.section("crl", ("next_update_hours",))
    hours = crl.integer("next_update_hours", 24, 1, MAX_CRL_HOURS) if crl else 24
    audit = sec.section("audit", ("hmac_key_file",))
    return CaSection(
        directory=directory,
        database=database,
        listen_host=host.strip("[]"),
        listen_port=int(port_text),
        base_url=base_url,
        keys=_keys(sec, directory),
        root=_keyref(sec, "root", directory),
        issuing=_keyref(sec, "issuing", directory),
        crl_next_update_hours=hours,
        audit_hmac_key_file=_opt_path(directory, audit.text("hmac_key_file")) if audit else None,
        ldap=_ldap(sec, directory),
    )


def _keys(ca: Section, directory: Path) -> KeySettings:
    sec = ca.section("keys", ("backend", "pkcs11", "software"), required=True)
    assert sec is not None  # noqa: S101
    backend = (sec.text("backend", default="pkcs11") or "").lower()
    if backend not in ("pkcs11", "software"):
        raise sec.error("backend", "ca.keys.backend must be pkcs11 or software")
    p11 = sec.section("pkcs11", ("module", "token_label", "pin_file", "pin_env"),
                      required=backend == "pkcs11")  # fmt: skip
    pkcs11 = None
    if p11 is not None:
        pin_file, pin_env = p11.text("pin_file"), p11.text("pin_env")
        if (pin_file is None) == (pin_env is None):
            raise p11.error(None, "ca.keys.pkcs11 needs exactly one of pin_file or pin_env")
        module = p11.text("module")
        pkcs11 = Pkcs11Settings(
            module=None if module in (None, "auto") else _path(directory, str(module)),
            token_label=p11.req_text("token_label"),
            pin_file=_opt_path(directory, pin_file),
            pin_env=pin_env,
        )
    soft = sec.section("software", ("directory", "passphrase_file", "passphrase_env"),
                       required=backend == "software")  # fmt: skip
    software = None
    if soft is not None:
        pw_file, pw_env = soft.text("passphrase_file"), soft.text("passphrase_env")
        if (pw_file is None) == (pw_env is None):
            raise soft.error(
                None, "ca.keys.software needs exactly one of passphrase_file or passphrase_env"
            )
        software = SoftwareKeySettings(
            directory=_path(directory, soft.text("directory", default="keys") or "keys"),
            passphrase_file=_opt_path(directory, pw_file),
            passphrase_env=pw_env,
        )
    return KeySettings(backend, pkcs11, software)


def _keyref(ca: Section, key: str, directory: Path) -> CaKeyRef:
    sec = ca.section(key, _KEYREF_KEYS, required=True)
    assert sec is not None  # noqa: S101
    label = sec.req_text("key_label")
    if len(label) > 200 or not label.isprintable():
        raise sec.error("key_label", f"ca.{key}.key_label must be printable, at most 200 long")
    try:
        key_type = KeyType.parse(sec.text("key_type", default="rsa4096") or "")
    except KeyBackendError as ex:
        raise sec.error("key_type", f"ca.{key}.key_type: {ex}") from None
    subject = sec.text("subject")
    if subject is not None:
        _check_dn(sec, "subject", subject)
    return CaKeyRef(label, key_type, _path(directory, sec.req_text("certificate")), subject)


def _ldap(ca: Section, directory: Path) -> LdapSettings | None:
    sec = ca.section("ldap", ("url", "bind_dn", "password_file", "base_dn"))
    if sec is None:
        return None
    url = sec.req_text("url")
    if not re.match(r"^ldaps?://\S+$", url):
        raise sec.error("url", "ca.ldap.url must be an ldap:// or ldaps:// URL")
    bind_dn = sec.req_text("bind_dn")
    base_dn = sec.req_text("base_dn")
    _check_ldap_dn(sec, "bind_dn", bind_dn)
    _check_ldap_dn(sec, "base_dn", base_dn)
    return LdapSettings(url, bind_dn, _opt_path(directory, sec.text("password_file")), base_dn)


def _check_dn(sec: Section, key: str, value: str) -> None:
    """A certificate subject in RFC 4514 (attribute names as cryptography knows them)."""
    try:
        x509.Name.from_rfc4514_string(value)
    except ValueError:
        raise sec.error(
            key, f"{sec.child(key)} is not a distinguished name like CN=Name,O=Org,C=CH"
        ) from None


def _check_ldap_dn(sec: Section, key: str, value: str) -> None:
    if not _LDAP_DN_RE.match(value):
        raise sec.error(key, f"{sec.child(key)} is not an LDAP DN like ou=people,dc=example,dc=com")


_PRODUCT_KEYS = ("profile", "validities", "key_types", "approval", "allow_simple_request",
                 "publish_ldap", "key_generation", "mailbox_validation")  # fmt: skip


def _ids(top: Section, key: str) -> list[tuple[str, Node, int]]:
    sec = top.section(key, (), required=True)
    assert sec is not None  # noqa: S101
    out = []
    for name, field in sec.fields.items():
        if not _ID_RE.match(name):
            raise SettingsError(
                sec.path, line_of(field.key_node),
                f"{key}: id {name!r} must be lower-case letters, digits, '.', '-', '_'",
            )  # fmt: skip
        out.append((name, field.value, line_of(field.key_node)))
    if not out:
        raise sec.error(None, f"{key} must list at least one entry")
    return out


def _products(top: Section) -> tuple[ProductSettings, ...]:
    products = []
    for pid, node, line in _ids(top, "products"):
        sec = Section(top.path, node, f"products.{pid}", _PRODUCT_KEYS, line)
        try:
            profile = Profile((sec.req_text("profile")).lower())
        except ValueError:
            raise sec.error("profile", "profile must be mailbox, sponsor or organization") from None
        try:
            approval = Approval((sec.text("approval", default="auto") or "").lower())
        except ValueError:
            raise sec.error("approval", "approval must be auto or manual") from None
        generation = (sec.text("key_generation", default="csr") or "").lower()
        try:
            key_generation = KeyGeneration(generation)
        except ValueError:
            raise sec.error("key_generation", "key_generation: csr, pkcs12 or both") from None
        validities = []
        for text, line in sec.text_list("validities", required=True):
            try:
                validity = Validity.parse(text)
            except ValueError as ex:
                raise SettingsError(sec.path, line, str(ex)) from None
            if validity.max_days > MAX_VALIDITY_DAYS:
                raise SettingsError(
                    sec.path, line,
                    f"validity {text} exceeds the S/MIME BR maximum of {MAX_VALIDITY_DAYS} days",
                )  # fmt: skip
            validities.append(validity)
        key_types = []
        for text, line in sec.text_list("key_types"):
            try:
                key_types.append(KeyType.parse(text))
            except KeyBackendError as ex:
                raise SettingsError(sec.path, line, str(ex)) from None
        if not key_types:
            key_types = list(DEFAULT_KEY_TYPES)
        products.append(
            ProductSettings(
                id=pid,
                profile=profile,
                validities=tuple(dict.fromkeys(validities)),
                key_types=tuple(dict.fromkeys(key_types)),
                approval=approval,
                allow_simple_request=sec.boolean("allow_simple_request", False),
                publish_ldap=sec.boolean("publish_ldap", False),
                key_generation=key_generation,
                mailbox_validation=sec.boolean("mailbox_validation", False),
            )
        )
    return tuple(products)


_ACCOUNT_KEYS = ("organisation", "email_domains", "ra_certificates", "products")
_ORG_KEYS = ("name", "organization_identifier", "country", "locality", "state")


def _accounts(top: Section, product_ids: set[str]) -> tuple[AccountSettings, ...]:
    accounts = []
    for aid, node, line in _ids(top, "accounts"):
        sec = Section(top.path, node, f"accounts.{aid}", _ACCOUNT_KEYS, line)
        org = sec.section("organisation", _ORG_KEYS, required=True)
        assert org is not None  # noqa: S101
        country = org.req_text("country").upper()
        if not re.match(r"^[A-Z]{2}$", country):
            raise org.error("country", "country must be a two-letter ISO 3166 code like CH")
        org_id = org.text("organization_identifier")
        if org_id is not None and not _ORG_ID_RE.match(org_id):
            raise org.error(
                "organization_identifier",
                "organization_identifier must look like NTRCH-CHE-123.456.789 "
                "(S/MIME BR 7.1.4.2.2)",
            )
        organisation = Organisation(
            org.req_text("name"), country, org_id, org.text("locality"), org.text("state")
        )
        domains = []
        # may be empty: the account then relies on DNS-validated domains (ca.ra.domains)
        for text, line in sec.text_list("email_domains"):
            domain = text.lower().rstrip(".")
            if not _DOMAIN_RE.match(domain):
                raise SettingsError(sec.path, line, f"{text!r} is not a domain name")
            domains.append(domain)
        allowed = []
        for text, line in sec.text_list("products"):
            if text not in product_ids:
                raise SettingsError(sec.path, line, f"unknown product {text!r}")
            allowed.append(text)
        accounts.append(
            AccountSettings(
                id=aid,
                organisation=organisation,
                email_domains=tuple(dict.fromkeys(domains)),
                ra_certificates=_ra_certificates(sec),
                products=tuple(allowed) if allowed else tuple(sorted(product_ids)),
            )
        )
    return tuple(accounts)


def _ra_certificates(sec: Section) -> tuple[RaCertificate, ...]:
    out = []
    for node in sec.items("ra_certificates"):
        item = Section(sec.path, node, f"{sec.where}.ra_certificates[]", ("sha256", "subject"))
        sha, subject = item.text("sha256"), item.text("subject")
        if (sha is None) == (subject is None):
            raise item.error(None, "an RA certificate is given by exactly one of sha256 or subject")
        if sha is not None:
            sha = sha.lower().replace(":", "")
            if not _HEX64_RE.match(sha):
                raise item.error("sha256", "sha256 must be 64 hex digits (colons allowed)")
        if subject is not None:
            _check_dn(item, "subject", subject)
        out.append(RaCertificate(sha, subject))
    return tuple(out)
