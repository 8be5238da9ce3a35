"""The effective configuration as JSON-able data and as text, secrets redacted.

Secrets never are in a Config (only where they are: file or environment variable), so
nothing to hide there; what is hidden is a password inside the store DSN or a URL
(:mod:`config.redact`).
"""

from __future__ import annotations

from typing import Any

from config.dn import format_dn
from config.model import Config, SecretRef
from config.redact import redact_url


def _secret(ref: SecretRef | None) -> dict[str, str] | None:
    if ref is None:
        return None
    if ref.file is not None:
        return {"file": str(ref.file)}
    return {"env": str(ref.env)}


def effective(config: Config) -> dict[str, Any]:
    """Everything the services will use, as JSON-able data (no secret values)."""
    pki = config.pki
    gateway = config.gateway
    data: dict[str, Any] = {"source": str(config.source), "pki": None}
    if pki is not None:
        data["pki"] = {
            "type": pki.type,
            "url": redact_url(pki.url),
            "protocol": pki.protocol,
            "serverName": pki.server_name,
            "serverPort": pki.server_port,
            "path": pki.path,
            "account": pki.query.account,
            "product": pki.query.product,
            "validity": str(pki.query.validity) if pki.query.validity else None,
            "otherQuery": dict(pki.query.other),
            "requestType": pki.request_method,
            "encodeRequestBase64": pki.encode_base64,
            "issuerDN": format_dn(pki.issuer_dn),
            "certSubjectDN": format_dn(pki.subject_template),
            "productKind": pki.product_kind.value,
            "productKindFrom": pki.product_kind_source,
            "getFromPKIForNewIntUsers": pki.enrol_internal_users,
            "getFromPKIForNewRecipients": pki.fetch_for_recipients,
            "accessCertificate": str(pki.access_certificate),
            "accessCertificatePassword": _secret(pki.access_password),
            "trustedRoots": [str(path) for path in pki.trusted_roots],
            "allowInsecureHttp": pki.allow_insecure_http,
            "connectTimeout": pki.connect_timeout,
            "readTimeout": pki.read_timeout,
            "retries": pki.retries,
            "directory": None
            if pki.directory is None
            else {
                "url": pki.directory.url,
                "base": pki.directory.base,
                "bindDn": pki.directory.bind_dn,
                "password": _secret(pki.directory.password),
                "timeout": pki.directory.timeout,
            },
        }
    data["gateway"] = {
        "listen": str(gateway.listen),
        "nextHop": str(gateway.next_hop),
        "nextHopTls": gateway.next_hop_tls.value,
        "nextHopCaFile": _opt(gateway.next_hop_ca_file),
        "hostname": gateway.hostname,
        "internalDomains": list(gateway.internal_domains),
        "maxMessageSize": gateway.max_message_size,
        "tlsCertificate": _opt(gateway.tls_certificate),
        "tlsKey": _opt(gateway.tls_key),
        "requireStartTls": gateway.require_starttls,
        "allowedNetworks": [str(net) for net in gateway.allowed_networks],
        "authUsersFile": _opt(gateway.auth_users_file),
        "authenticatedMayRelay": gateway.authenticated_may_relay,
        "requireAuth": gateway.require_auth,
        "allowPlaintextAuth": gateway.allow_plaintext_auth,
        "workers": gateway.workers,
        "maxSessions": gateway.max_sessions,
        "idleTimeout": gateway.idle_timeout,
        "revocationCheck": gateway.revocation_check.value,
        "revocationTimeout": gateway.revocation_timeout,
    }
    data["smime"] = {
        "contentCipher": config.smime.content_cipher.value,
        "rsaKeyTransport": config.smime.rsa_key_transport.value,
        "signatureFormat": config.smime.signature_format.value,
    }
    policy = config.policy
    data["policy"] = {
        "file": _opt(config.policy_file),
        "sign": policy.default_sign.value,
        "encrypt": policy.default_encrypt.value,
        "missingCertificate": policy.default_missing.value,
        "rules": [
            {
                "scope": rule.scope.value,
                "pattern": rule.pattern,
                **({"sign": rule.sign.value} if rule.sign else {}),
                **({"encrypt": rule.encrypt.value} if rule.encrypt else {}),
                **({"missingCertificate": rule.missing.value} if rule.missing else {}),
            }
            for rule in policy.rules
        ],
    }
    data["dkim"] = [
        {"domain": d.domain, "selector": d.selector, "keyFile": str(d.key_file)}
        for d in config.dkim
    ]
    data["store"] = {"dsn": redact_url(config.store.dsn)}
    keys = config.keys
    data["keys"] = None
    if keys is not None:
        data["keys"] = {
            "backend": keys.kind,
            "directory": _opt(keys.directory),
            "passphrase": _secret(keys.passphrase),
            "module": _opt(keys.module),
            "tokenLabel": keys.token_label,
            "pin": _secret(keys.pin),
            "poolSize": keys.pool_size,
        }
    data["lookup"] = {
        "negativeCacheTtl": config.lookup.negative_cache_ttl,
        "ldap": [
            {
                "name": d.name,
                "url": redact_url(d.url),
                "base": d.base,
                "bindDn": d.bind_dn,
                "password": _secret(d.password),
                "timeout": d.timeout,
            }
            for d in config.lookup.directories
        ],
    }
    publish = config.publish
    data["publish"] = {
        "ldap": None
        if publish is None
        else {
            "url": redact_url(publish.url),
            "base": publish.base,
            "bindDn": publish.bind_dn,
            "password": _secret(publish.password),
            "timeout": publish.timeout,
        }
    }
    data["enrolment"] = {
        "renewDaysBeforeExpiry": config.enrolment.renew_days_before_expiry,
        "keyPoolSize": config.enrolment.key_pool_size,
        "keyType": config.enrolment.key_type,
    }
    data["metrics"] = {"listen": str(config.metrics_listen) if config.metrics_listen else None}
    return data


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _flatten(prefix: str, value: Any, lines: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            lines.append(f"{prefix}: -")
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, lines)
    elif isinstance(value, list):
        if not value:
            lines.append(f"{prefix}: -")
        elif all(not isinstance(item, dict | list) for item in value):
            lines.append(f"{prefix}: {', '.join(str(item) for item in value)}")
        else:
            for index, item in enumerate(value):
                _flatten(f"{prefix}[{index}]", item, lines)
    else:
        lines.append(f"{prefix}: {'-' if value is None else value}")


def text_lines(config: Config) -> list[str]:
    """``section.key: value`` lines of :func:`effective` (PKI first)."""
    lines: list[str] = []
    _flatten("", effective(config), lines)
    return lines
