"""cmcgate's own sections: gateway, S/MIME, DKIM, stores, keys, lookup, publication,
enrolment, metrics."""

from __future__ import annotations

import re
from pathlib import Path

from config.build_pki import ldap_directory, secret_ref
from config.model import (
    DkimDomain,
    EnrolmentSettings,
    GatewaySettings,
    KeyBackendSettings,
    LookupSettings,
    NextHopTls,
    PublishSettings,
    RevocationCheck,
    SignatureFormat,
    SmimeSettings,
    StoreSettings,
)
from config.smime import ContentCipher, RsaKeyTransport
from config.source import Props
from config.values import (
    HostPort,
    IPNetwork,
    ValueProblem,
    parse_bool,
    parse_choice,
    parse_domain,
    parse_duration,
    parse_host_port,
    parse_hostname,
    parse_int,
    parse_network,
    parse_seconds,
    parse_size,
    shown,
    split_list,
)

G = "cmcgate.gateway."
K = "cmcgate.keys."
DEFAULT_DSN = "sqlite:////var/lib/cmcgate/cmcgate.db"
DEFAULT_NETWORKS = ("127.0.0.0/8", "::1/128")
KEY_TYPES = ("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384")
_SELECTOR_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*$")


def _networks(value: str) -> tuple[IPNetwork, ...]:
    return tuple(parse_network(item) for item in split_list(value))


def _domains(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(parse_domain(item) for item in split_list(value)))


def build_gateway(p: Props) -> GatewaySettings:
    listen = p.get(G + "listen", parse_host_port, HostPort("127.0.0.1", 10025))
    next_hop = p.get(
        G + "nextHop", lambda v: parse_host_port(v, default_port=25), HostPort("127.0.0.1", 10026)
    )
    if listen == next_hop:
        p.error(
            G + "nextHop",
            "is the gateway's own listen address: mail would loop",
            p.line(G + "nextHop"),
        )
    tls_certificate = p.get_path(G + "tlsCertificate")
    tls_key = p.get_path(G + "tlsKey")
    if (tls_certificate is None) != (tls_key is None):
        missing = G + ("tlsKey" if tls_key is None else "tlsCertificate")
        other = G + ("tlsCertificate" if tls_key is None else "tlsKey")
        p.error(
            missing, f"missing: STARTTLS needs both {G}tlsCertificate and {G}tlsKey", p.line(other)
        )
    require_starttls = p.get(G + "requireStartTls", parse_bool, False)
    if require_starttls and tls_certificate is None:
        p.error(
            G + "requireStartTls",
            f"needs {G}tlsCertificate and {G}tlsKey",
            p.line(G + "requireStartTls"),
        )
    defaults = tuple(parse_network(net) for net in DEFAULT_NETWORKS)
    users_file = p.get_path(G + "authUsersFile")
    require_auth = p.get(G + "requireAuth", parse_bool, False)
    plaintext_auth = p.get(G + "allowPlaintextAuth", parse_bool, False)
    if require_auth and users_file is None:
        p.error(G + "requireAuth", f"needs {G}authUsersFile", p.line(G + "requireAuth"))
    if users_file is not None and tls_certificate is None and not plaintext_auth:
        p.error(
            G + "authUsersFile",
            f"AUTH is offered only after STARTTLS: needs {G}tlsCertificate and {G}tlsKey"
            f" (or {G}allowPlaintextAuth=true)",
            p.line(G + "authUsersFile"),
        )
    return GatewaySettings(
        listen=listen,
        next_hop=next_hop,
        next_hop_tls=p.get(
            G + "nextHopTls",
            lambda v: NextHopTls(parse_choice(v, NextHopTls)),
            NextHopTls.OPPORTUNISTIC,
        ),
        next_hop_ca_file=p.get_path(G + "nextHopCaFile"),
        hostname=p.get(G + "hostname", parse_hostname, None),
        internal_domains=p.get(G + "internalDomains", _domains, ()),
        max_message_size=p.get(G + "maxMessageSize", parse_size, 50 * 1024 * 1024),
        tls_certificate=tls_certificate,
        tls_key=tls_key,
        require_starttls=require_starttls,
        allowed_networks=p.get(G + "allowedNetworks", _networks, defaults),
        auth_users_file=users_file,
        authenticated_may_relay=p.get(G + "authenticatedMayRelay", parse_bool, True),
        require_auth=require_auth,
        allow_plaintext_auth=plaintext_auth,
        state_dir=p.get_path(G + "stateDir") or Path("/var/lib/cmcgate/state"),
        trusted_roots=p.get_paths(G + "trustedRoots"),
        workers=p.get(G + "workers", lambda v: parse_int(v, minimum=1, maximum=64), 1),
        max_sessions=p.get(
            G + "maxSessions", lambda v: parse_int(v, minimum=1, maximum=10000), 100
        ),
        idle_timeout=p.get(
            G + "idleTimeout", lambda v: parse_seconds(v, minimum=1, maximum=3600), 300.0
        ),
        revocation_check=p.get(
            G + "revocationCheck",
            lambda v: RevocationCheck(parse_choice(v, RevocationCheck)),
            RevocationCheck.SOFT,
        ),
        revocation_timeout=p.get(
            G + "revocationTimeout", lambda v: parse_seconds(v, maximum=300), 5.0
        ),
    )


def build_smime(p: Props) -> SmimeSettings:
    """``cmcgate.smime.*``; choices are case-insensitive, errors list the valid ones."""
    s = "cmcgate.smime."
    return SmimeSettings(
        content_cipher=p.get(
            s + "contentCipher",
            lambda v: ContentCipher(parse_choice(v, ContentCipher)),
            ContentCipher.AES256_CBC,
        ),
        rsa_key_transport=p.get(
            s + "rsaKeyTransport",
            lambda v: RsaKeyTransport(parse_choice(v, RsaKeyTransport)),
            RsaKeyTransport.PKCS1V15,
        ),
        signature_format=p.get(
            s + "signatureFormat",
            lambda v: SignatureFormat(parse_choice(v, SignatureFormat)),
            SignatureFormat.DETACHED,
        ),
    )


def build_dkim(p: Props) -> tuple[DkimDomain, ...]:
    prefix = "cmcgate.dkim."
    names = dict.fromkeys(key[len(prefix) :].rpartition(".")[0] for key in p.family(prefix))
    result = []
    for name in names:
        selector_key, file_key = f"{prefix}{name}.selector", f"{prefix}{name}.keyFile"
        anchor = p.line(selector_key) or p.line(file_key)
        try:
            domain = parse_domain(name)
        except ValueProblem as exc:
            p.error(selector_key if selector_key in p.values else file_key, str(exc), anchor)
            continue
        selector = p.get(selector_key, _selector, None)
        key_file = p.get_path(file_key)
        for key in (selector_key, file_key):
            if p.raw(key) is None:
                p.error(key, f"missing: DKIM for {domain} needs a selector and a key file", anchor)
        if selector is not None and key_file is not None:
            result.append(DkimDomain(domain, selector, key_file))
    return tuple(result)


def _selector(value: str) -> str:
    if not _SELECTOR_RE.match(value):
        raise ValueProblem(f"{shown(value)} is not a DKIM selector")
    return value


def build_store(p: Props) -> StoreSettings:
    dsn = p.raw("cmcgate.store.dsn")
    if dsn is None:
        return StoreSettings(DEFAULT_DSN)
    scheme = dsn.partition("://")[0].lower()
    if not scheme or "://" not in dsn or not re.fullmatch(r"[a-z0-9+]+", scheme):
        p.error(
            "cmcgate.store.dsn",
            "expected an SQLAlchemy URL such as sqlite:////path/to.db",
            p.line("cmcgate.store.dsn"),
        )
        return StoreSettings(DEFAULT_DSN)
    if scheme == "sqlite" and dsn.startswith("sqlite:///") and not dsn.startswith("sqlite:////"):
        relative = dsn[len("sqlite:///") :]
        if relative and relative != ":memory:":
            dsn = f"sqlite:///{p.base_dir / relative}"
    return StoreSettings(dsn)


def build_keys(p: Props) -> KeyBackendSettings | None:
    kind = p.get(K + "backend", lambda v: parse_choice(v.lower(), ("software", "pkcs11")), None)
    others = [key for key in p.family(K) if key != K + "backend"]
    if kind is None:
        if others and p.raw(K + "backend") is None:
            p.error(
                K + "backend",
                f"missing: {others[0]} is set but no backend (software or pkcs11)",
                p.line(others[0]),
            )
        return None
    software = ("directory", "passphraseFile", "passphraseEnv")
    pkcs11 = ("module", "tokenLabel", "pinFile", "pinEnv", "poolSize")
    wrong = pkcs11 if kind == "software" else software
    for leaf in wrong:
        if p.raw(K + leaf) is not None:
            p.error(K + leaf, f"does not apply to the {kind} backend", p.line(K + leaf))
    needed = ("directory",) if kind == "software" else ("module", "tokenLabel")
    for leaf in needed:
        if p.raw(K + leaf) is None:
            p.error(K + leaf, f"missing: required by {K}backend={kind}", p.line(K + "backend"))
    pin = secret_ref(p, K + "pinFile", K + "pinEnv")
    if kind == "pkcs11" and pin is None:
        p.error(
            K + "pinFile",
            f"missing: the PKCS#11 token needs {K}pinFile or {K}pinEnv",
            p.line(K + "backend"),
        )
    return KeyBackendSettings(
        kind=kind,
        directory=p.get_path(K + "directory"),
        passphrase=secret_ref(p, K + "passphraseFile", K + "passphraseEnv"),
        module=p.get_path(K + "module"),
        token_label=p.raw(K + "tokenLabel"),
        pin=pin,
        pool_size=p.get(K + "poolSize", lambda v: parse_int(v, minimum=1, maximum=256), 4),
    )


def build_lookup(p: Props) -> LookupSettings:
    prefix = "cmcgate.lookup.ldap."
    names = dict.fromkeys(key[len(prefix) :].rpartition(".")[0] for key in p.family(prefix))
    directories = []
    for name in names:
        key = f"{prefix}{name}."
        anchor = p.line(p.family(key)[0])
        missing = f"missing: LDAP directory {name!r} needs url and base"
        directory = ldap_directory(p, key, name, missing, anchor)
        if directory is not None:
            directories.append(directory)
    return LookupSettings(
        directories=tuple(directories),
        negative_cache_ttl=p.get("cmcgate.lookup.negativeCacheTtl", parse_duration, 3600),
    )


def build_publish(p: Props) -> PublishSettings | None:
    key = "cmcgate.publish.ldap."
    present = p.family(key)
    if not present:
        return None
    anchor = p.line(present[0])
    missing = "missing: publishing to LDAP needs url and base"
    directory = ldap_directory(p, key, "publish", missing, anchor)
    if directory is None:
        return None
    return PublishSettings(
        directory.url, directory.base, directory.bind_dn, directory.password, directory.timeout
    )


def build_enrolment(p: Props) -> EnrolmentSettings:
    e = "cmcgate.enrolment."
    return EnrolmentSettings(
        renew_days_before_expiry=p.get(
            e + "renewDaysBeforeExpiry", lambda v: parse_int(v, minimum=1, maximum=365), 30
        ),
        key_pool_size=p.get(e + "keyPoolSize", lambda v: parse_int(v, minimum=0, maximum=1000), 0),
        key_type=p.get(e + "keyType", lambda v: parse_choice(v.lower(), KEY_TYPES), "rsa3072"),
    )


def build_metrics(p: Props) -> HostPort | None:
    return p.get("cmcgate.metrics.listen", parse_host_port, None)
