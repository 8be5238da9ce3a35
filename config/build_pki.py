"""The PKI connection: Totemo's ``connection.ssl.*``/``security.pkiConnection.*`` and ours."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit

from cryptography import x509

from config.dn import parse_dn
from config.errors import DnError
from config.model import CmcQuery, LdapDirectory, PkiConnection, SecretRef, Validity
from config.source import Props
from config.subject import ProductKind, check_template, kind_from_product, kind_from_template
from config.values import (
    ValueProblem,
    parse_bool,
    parse_choice,
    parse_env_name,
    parse_hostname,
    parse_int,
    parse_path,
    parse_port,
    parse_seconds,
    shown,
)

PROTOCOL = "connection.ssl.protocol"
SERVER = "connection.ssl.serverName"
PORT = "connection.ssl.serverPort"
URL = "connection.ssl.url"
ENABLED = "security.pkiConnection.enabled"
TYPE = "security.pkiConnection.type"
REQUEST_TYPE = "security.pkiConnection.rfc2797.requestType"
BASE64 = "security.pkiConnection.rfc2797.encodeRequestBase64"
ISSUER = "security.pkiConnection.rfc2797.issuerDN"
INT_USERS = "security.pkiConnection.getFromPKIForNewIntUsers"
RECIPIENTS = "security.pkiConnection.getFromPKIForNewRecipients"
SUBJECT = "security.pkiConnection.certSubjectDN"
P = "cmcgate.pki."
DIRECTORY = P + "directory."

_MAX_VALIDITY = {"y": 3, "m": 36, "d": 1096}
_VALIDITY_RE = re.compile(r"([1-9][0-9]{0,3})([ymd])", re.IGNORECASE)


def parse_protocol(value: str) -> str:
    lowered = value.lower()
    if lowered in ("https://", "https", "http://", "http"):
        return lowered.removesuffix("://")
    raise ValueProblem(f"expected https:// (or http:// for testing), not {shown(value)}")


def parse_server_name(value: str) -> str:
    if "://" in value:
        raise ValueProblem(f"the host name only, not {shown(value)}: the scheme goes in {PROTOCOL}")
    if "/" in value:
        raise ValueProblem(f"the host name only, not {shown(value)}: the path goes in {URL}")
    if value.count(":") == 1:
        raise ValueProblem(f"the host name only, not {shown(value)}: the port goes in {PORT}")
    return parse_hostname(value)


def _query_text(value: str, name: str) -> str:
    text = unquote_plus(value)
    if not text.strip():
        raise ValueProblem(f"the query's {name} is empty")
    if len(text) > 128 or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise ValueProblem(f"the query's {name} is too long or holds control characters")
    return text


def parse_validity(value: str) -> Validity:
    match = _VALIDITY_RE.fullmatch(value)
    if not match:
        raise ValueProblem(f"validity must look like 1y, 2y, 3y, 24m or 365d, not {shown(value)}")
    count, unit = int(match.group(1)), match.group(2).lower()
    if count > _MAX_VALIDITY[unit]:
        raise ValueProblem(f"validity {value} is longer than 3 years")
    return Validity(count, unit)


def parse_url(value: str) -> CmcQuery:
    """Check ``connection.ssl.url`` (path and query) and return its query."""
    if "://" in value:
        raise ValueProblem(
            f"the path only (e.g. /ws/cmc?account=...&product=...), not a whole URL: "
            f"put the host in {SERVER} and the port in {PORT}"
        )
    if not value.startswith("/"):
        raise ValueProblem(f"must start with '/', not {shown(value)}")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueProblem("must not contain blanks or control characters (percent-encode them)")
    if "#" in value:
        raise ValueProblem("must not contain a #fragment")
    _path, mark, query = value.partition("?")
    if not mark or not query:
        raise ValueProblem("has no query: expected ?account=...&product=...")
    fields: dict[str, str] = {}
    for part in query.split("&"):
        name, equals, field = part.partition("=")
        name = unquote_plus(name)
        if not equals or not name:
            raise ValueProblem(f"query part {shown(part)} is not name=value")
        if name in fields:
            raise ValueProblem(f"query parameter {shown(name)} is given twice")
        fields[name] = field
    for needed in ("account", "product"):
        if needed not in fields:
            raise ValueProblem(f"the query has no {needed}= (expected ?account=...&product=...)")
    validity = parse_validity(fields["validity"]) if "validity" in fields else None
    other = tuple(
        (name, unquote_plus(text))
        for name, text in fields.items()
        if name not in ("account", "product", "validity")
    )
    return CmcQuery(
        _query_text(fields["account"], "account"),
        _query_text(fields["product"], "product"),
        validity,
        other,
    )


def parse_ldap_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueProblem(f"{shown(value)} is not an ldap:// or ldaps:// URL") from None
    if parts.scheme.lower() not in ("ldap", "ldaps") or not parts.hostname:
        raise ValueProblem(f"{shown(value)} is not an ldap:// or ldaps:// URL")
    return value


def secret_ref(p: Props, file_key: str, env_key: str) -> SecretRef | None:
    path = p.get(file_key, lambda value: parse_path(value, p.base_dir), None)
    env = p.get(env_key, parse_env_name, None)
    if path is not None and env is not None:
        p.error(env_key, f"set only one of {file_key} and {env_key}", p.line(env_key))
    if path is None and env is None:
        return None
    return SecretRef(file=path, env=None if path is not None else env)


def _kind(p: Props, product: str | None, template: x509.Name | None) -> tuple[ProductKind, str]:
    explicit = p.get(P + "productKind", lambda v: ProductKind(parse_choice(v, ProductKind)), None)
    if explicit is not None:
        return explicit, P + "productKind"
    from_product = kind_from_product(product) if product else None
    if from_product is not None:
        return from_product, "product"
    if template is not None:
        return kind_from_template(template), "template"
    return ProductKind.GOLD, "template"


def ldap_directory(
    p: Props, key: str, name: str, missing: str, anchor: int | None
) -> LdapDirectory | None:
    """The LDAP directory under the prefix ``key`` (``url``, ``base``, ``bindDn``, the
    password's file or environment variable, ``timeout``); None when url or base is wanting
    (an error is reported at ``anchor`` with the message ``missing``)."""
    for leaf in ("url", "base"):
        if p.raw(key + leaf) is None:
            p.error(key + leaf, missing, anchor)
    url = p.get(key + "url", parse_ldap_url, None)
    base = p.raw(key + "base")
    password = secret_ref(p, key + "passwordFile", key + "passwordEnv")
    bind_dn = p.raw(key + "bindDn")
    if password is not None and bind_dn is None:
        p.error(key + "bindDn", "missing: a password is set but no bind DN", anchor)
    timeout = p.get(key + "timeout", lambda v: parse_seconds(v, maximum=300), 5.0)
    if url is None or base is None:
        return None
    return LdapDirectory(name, url, base, bind_dn, password, timeout)


def _directory(p: Props, fetch: bool) -> LdapDirectory | None:
    """``cmcgate.pki.directory.*``: the PKI's public directory, where it publishes the
    certificates it issues (SwissSign, the bundled CA): asked for external recipients when
    ``getFromPKIForNewRecipients=true``."""
    present = p.family(DIRECTORY)
    if not present:
        if fetch:
            p.warn(
                RECIPIENTS,
                f"is true but {DIRECTORY}url is not set: recipients' certificates cannot be "
                "fetched from the PKI (CMC has no search by address; set the directory the "
                "PKI publishes to)",
                p.line(RECIPIENTS),
            )
        return None
    anchor = p.line(present[0])
    directory = ldap_directory(
        p, DIRECTORY, "pki", "missing: the PKI's directory needs url and base", anchor
    )
    if not fetch:
        p.warn(
            present[0],
            f"the PKI's directory is not asked: {RECIPIENTS} is not true",
            anchor,
        )
    return directory


def build_pki(p: Props) -> PkiConnection | None:
    """The PKI connection when ``security.pkiConnection.enabled=true``, else None."""
    enabled = p.get(ENABLED, parse_bool, False)
    kind_of_pki = p.get(TYPE, lambda v: parse_choice(v.lower(), ("rfc2797", "rfc5272")), "rfc2797")
    protocol = p.get(PROTOCOL, parse_protocol, "https")
    insecure = p.get(P + "allowInsecureHttp", parse_bool, False)
    if protocol == "http" and not insecure:
        p.error(
            PROTOCOL,
            f"plain http is refused: use https:// (or set {P}allowInsecureHttp=true for testing)",
            p.line(PROTOCOL),
        )
    server = p.get(SERVER, parse_server_name, None)
    port = p.get(PORT, parse_port, 443 if protocol == "https" else 80)
    query = p.get(URL, parse_url, None)
    for name, _value in query.other if query else ():
        p.warn(
            URL,
            f"query parameter {name!r} is not one cmcgate knows: passed on unchanged",
            p.line(URL),
        )
    method = p.get(REQUEST_TYPE, lambda v: parse_choice(v.upper(), ("POST", "GET")), "POST")
    base64 = p.get(BASE64, parse_bool, False)
    issuer = p.get(ISSUER, parse_dn, None)
    template = p.get(SUBJECT, parse_dn, None)
    kind, kind_source = _kind(p, query.product if query else None, template)
    if template is not None:
        try:
            check_template(template, kind)
        except DnError as exc:
            p.error(p.written(SUBJECT), str(exc), p.line(SUBJECT))
    int_users = p.get(INT_USERS, parse_bool, False)
    recipients = p.get(RECIPIENTS, parse_bool, False)
    access = p.get_path(P + "accessCertificate")
    password = secret_ref(
        p, P + "accessCertificatePasswordFile", P + "accessCertificatePasswordEnv"
    )
    roots = p.get_paths(P + "trustedRoots")
    connect = p.get(P + "connectTimeout", parse_seconds, 10.0)
    read = p.get(P + "readTimeout", parse_seconds, 60.0)
    retries = p.get(P + "retries", lambda v: parse_int(v, minimum=1, maximum=10), 3)
    if not enabled and (p.raw(ENABLED) or "false").lower() == "false":
        configured = [key for key in (SERVER, URL, SUBJECT, ISSUER) if key in p.values]
        if configured:
            p.warn(
                ENABLED,
                "is not true: the PKI connection configured here is not used",
                p.line(ENABLED) or p.line(configured[0]),
            )
    if not enabled:
        return None
    directory = _directory(p, recipients)
    required = [SERVER, URL, ISSUER, SUBJECT, P + "accessCertificate"]
    if protocol == "https":
        required.append(P + "trustedRoots")
    for key in required:
        if p.raw(key) is None:
            p.error(key, f"missing: required because {ENABLED}=true", p.line(ENABLED))
    if server is None or query is None or issuer is None or template is None or access is None:
        return None
    return PkiConnection(
        type=kind_of_pki,
        protocol=protocol,
        server_name=server,
        server_port=port,
        path=p.raw(URL) or "",
        query=query,
        request_method=method,
        encode_base64=base64,
        issuer_dn=issuer,
        subject_template=template,
        product_kind=kind,
        product_kind_source=kind_source,
        enrol_internal_users=int_users,
        fetch_for_recipients=recipients,
        access_certificate=access,
        access_password=password,
        trusted_roots=roots,
        allow_insecure_http=insecure,
        connect_timeout=connect,
        read_timeout=read,
        retries=retries,
        directory=directory,
    )
