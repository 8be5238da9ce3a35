"""Every key cmcgate reads, and what an unknown key is.

Totemo's keys are accepted verbatim (``connection.ssl.*``, ``security.pkiConnection.*``);
cmcgate's own keys all start with ``cmcgate.`` and use Totemo's camelCase leaves.  A key
under one of :data:`STRICT_PREFIXES` that is not known is an error with the closest known key
suggested; any other unknown key is a warning (a pasted Totemo file holds many keys that are
not about the PKI connection).  Keys that would hold a secret inline are errors.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

TOTEMO_KEYS = (
    "connection.ssl.protocol",
    "connection.ssl.serverName",
    "connection.ssl.serverPort",
    "connection.ssl.url",
    "security.pkiConnection.enabled",
    "security.pkiConnection.type",
    "security.pkiConnection.rfc2797.requestType",
    "security.pkiConnection.rfc2797.encodeRequestBase64",
    "security.pkiConnection.rfc2797.issuerDN",
    "security.pkiConnection.getFromPKIForNewIntUsers",
    "security.pkiConnection.getFromPKIForNewRecipients",
    "security.pkiConnection.certSubjectDN",
)

#: rfc5272 is the same protocol family as rfc2797: its sub-keys are accepted as aliases.
ALIASES = {
    "security.pkiConnection.rfc5272.requestType": "security.pkiConnection.rfc2797.requestType",
    "security.pkiConnection.rfc5272.encodeRequestBase64": (
        "security.pkiConnection.rfc2797.encodeRequestBase64"
    ),
    "security.pkiConnection.rfc5272.issuerDN": "security.pkiConnection.rfc2797.issuerDN",
}

OWN_KEYS = (
    "cmcgate.pki.accessCertificate",
    "cmcgate.pki.accessCertificatePasswordFile",
    "cmcgate.pki.accessCertificatePasswordEnv",
    "cmcgate.pki.trustedRoots",
    "cmcgate.pki.allowInsecureHttp",
    "cmcgate.pki.productKind",
    "cmcgate.pki.connectTimeout",
    "cmcgate.pki.readTimeout",
    "cmcgate.pki.retries",
    "cmcgate.pki.directory.url",
    "cmcgate.pki.directory.base",
    "cmcgate.pki.directory.bindDn",
    "cmcgate.pki.directory.passwordFile",
    "cmcgate.pki.directory.passwordEnv",
    "cmcgate.pki.directory.timeout",
    "cmcgate.gateway.listen",
    "cmcgate.gateway.nextHop",
    "cmcgate.gateway.nextHopTls",
    "cmcgate.gateway.nextHopCaFile",
    "cmcgate.gateway.hostname",
    "cmcgate.gateway.internalDomains",
    "cmcgate.gateway.maxMessageSize",
    "cmcgate.gateway.tlsCertificate",
    "cmcgate.gateway.tlsKey",
    "cmcgate.gateway.requireStartTls",
    "cmcgate.gateway.allowedNetworks",
    "cmcgate.gateway.authUsersFile",
    "cmcgate.gateway.authenticatedMayRelay",
    "cmcgate.gateway.requireAuth",
    "cmcgate.gateway.allowPlaintextAuth",
    "cmcgate.gateway.stateDir",
    "cmcgate.gateway.trustedRoots",
    "cmcgate.gateway.workers",
    "cmcgate.gateway.revocationCheck",
    "cmcgate.gateway.revocationTimeout",
    "cmcgate.smime.contentCipher",
    "cmcgate.smime.rsaKeyTransport",
    "cmcgate.smime.signatureFormat",
    "cmcgate.gateway.maxSessions",
    "cmcgate.gateway.idleTimeout",
    "cmcgate.policy.file",
    "cmcgate.policy.sign",
    "cmcgate.policy.encrypt",
    "cmcgate.policy.missingCertificate",
    "cmcgate.store.dsn",
    "cmcgate.keys.backend",
    "cmcgate.keys.directory",
    "cmcgate.keys.passphraseFile",
    "cmcgate.keys.passphraseEnv",
    "cmcgate.keys.module",
    "cmcgate.keys.tokenLabel",
    "cmcgate.keys.pinFile",
    "cmcgate.keys.pinEnv",
    "cmcgate.keys.poolSize",
    "cmcgate.lookup.negativeCacheTtl",
    "cmcgate.publish.ldap.url",
    "cmcgate.publish.ldap.base",
    "cmcgate.publish.ldap.bindDn",
    "cmcgate.publish.ldap.passwordFile",
    "cmcgate.publish.ldap.passwordEnv",
    "cmcgate.publish.ldap.timeout",
    "cmcgate.enrolment.renewDaysBeforeExpiry",
    "cmcgate.enrolment.keyPoolSize",
    "cmcgate.enrolment.keyType",
    "cmcgate.metrics.listen",
)

POLICY_LEAVES = ("sign", "encrypt", "missingCertificate")
#: ``prefix<name>.<leaf>``: per-domain/-address/-directory keys.
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cmcgate.policy.sender.", POLICY_LEAVES),
    ("cmcgate.policy.recipient.", POLICY_LEAVES),
    ("cmcgate.dkim.", ("selector", "keyFile")),
    (
        "cmcgate.lookup.ldap.",
        ("url", "base", "bindDn", "passwordFile", "passwordEnv", "timeout"),
    ),
)

INLINE_SECRETS = {
    "cmcgate.pki.accessCertificatePassword": "cmcgate.pki.accessCertificatePasswordFile or "
    "cmcgate.pki.accessCertificatePasswordEnv",
    "cmcgate.keys.pin": "cmcgate.keys.pinFile or cmcgate.keys.pinEnv",
    "cmcgate.keys.passphrase": "cmcgate.keys.passphraseFile or cmcgate.keys.passphraseEnv",
    "cmcgate.publish.ldap.password": "cmcgate.publish.ldap.passwordFile or "
    "cmcgate.publish.ldap.passwordEnv",
    "cmcgate.pki.directory.password": "cmcgate.pki.directory.passwordFile or "
    "cmcgate.pki.directory.passwordEnv",
}

STRICT_PREFIXES = ("security.pkiConnection.", "connection.ssl.", "cmcgate.")
KNOWN_KEYS = frozenset(TOTEMO_KEYS) | frozenset(OWN_KEYS) | frozenset(ALIASES)


@dataclass(frozen=True)
class KeyClass:
    """What a key is: ``known`` (canonical spelling in ``canonical``), or a problem."""

    known: bool
    canonical: str = ""
    strict: bool = False  # unknown under a strict prefix: an error
    secret_hint: str = ""  # an inline secret: use these keys instead
    suggestion: str = ""


def family_of(key: str) -> tuple[str, str, str] | None:
    """(prefix, name, leaf) when ``key`` has the shape of a family key."""
    for prefix, _leaves in FAMILIES:
        if key.startswith(prefix):
            name, dot, leaf = key[len(prefix) :].rpartition(".")
            if dot and name:
                return prefix, name, leaf
    return None


def _candidates(key: str) -> list[str]:
    names = [*TOTEMO_KEYS, *OWN_KEYS]
    shape = family_of(key)
    if shape is not None:
        prefix, name, _ = shape
        leaves = dict(FAMILIES)[prefix]
        names.extend(f"{prefix}{name}.{leaf}" for leaf in leaves)
    return names


def suggest(key: str, *, cutoff: float = 0.6) -> str:
    """The closest known key (case-insensitive), or ``""``."""
    names = _candidates(key)
    by_lower = {name.lower(): name for name in names}
    found = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else ""


def classify(key: str) -> KeyClass:
    if key in KNOWN_KEYS:
        return KeyClass(True, ALIASES.get(key, key))
    if key in INLINE_SECRETS:
        return KeyClass(False, key, strict=True, secret_hint=INLINE_SECRETS[key])
    shape = family_of(key)
    if shape is not None:
        prefix, name, leaf = shape
        if leaf in dict(FAMILIES)[prefix]:
            return KeyClass(True, key)
        if prefix == "cmcgate.lookup.ldap." and leaf == "password":
            hint = f"{prefix}{name}.passwordFile or {prefix}{name}.passwordEnv"
            return KeyClass(False, key, strict=True, secret_hint=hint)
    strict = any(key.lower().startswith(prefix.lower()) for prefix in STRICT_PREFIXES)
    suggestion = suggest(key, cutoff=0.6 if strict else 0.9)
    return KeyClass(False, key, strict=strict, suggestion=suggestion)
