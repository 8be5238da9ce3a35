"""What ``cmcgate config check`` adds to a load: do the files it names exist?

Loading never touches the files a configuration names (a service may start before a
certificate is deployed, and tests load examples whose files do not exist); this check reads
nothing secret, it only looks whether each file is there and readable, and whether each
environment variable named for a secret is set.  Everything it finds is a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

from config.errors import ConfigIssue, Severity
from config.model import Config, SecretRef


def _refs(config: Config) -> list[tuple[str, Path | SecretRef | None]]:
    refs: list[tuple[str, Path | SecretRef | None]] = []
    pki = config.pki
    if pki is not None:
        refs.append(("cmcgate.pki.accessCertificate", pki.access_certificate))
        password = pki.access_password
        key = "cmcgate.pki.accessCertificatePassword" + (
            "File" if password and password.file else "Env"
        )
        refs.append((key, password))
        refs.extend(("cmcgate.pki.trustedRoots", path) for path in pki.trusted_roots)
    gateway = config.gateway
    refs.append(("cmcgate.gateway.tlsCertificate", gateway.tls_certificate))
    refs.append(("cmcgate.gateway.tlsKey", gateway.tls_key))
    refs.append(("cmcgate.gateway.nextHopCaFile", gateway.next_hop_ca_file))
    refs.append(("cmcgate.gateway.authUsersFile", gateway.auth_users_file))
    refs.extend((f"cmcgate.dkim.{d.domain}.keyFile", d.key_file) for d in config.dkim)
    keys = config.keys
    if keys is not None:
        refs.append(("cmcgate.keys.directory", keys.directory))
        refs.append(("cmcgate.keys.module", keys.module))
        for leaf, ref in (("passphrase", keys.passphrase), ("pin", keys.pin)):
            suffix = "File" if ref is not None and ref.file is not None else "Env"
            refs.append((f"cmcgate.keys.{leaf}{suffix}", ref))
    for d in config.lookup.directories:
        ref = d.password
        suffix = "File" if ref is not None and ref.file is not None else "Env"
        refs.append((f"cmcgate.lookup.ldap.{d.name}.password{suffix}", ref))
    return refs


def check_files(config: Config) -> list[ConfigIssue]:
    """Warnings for named files that are missing or unreadable, and unset variables."""
    issues = []
    source = str(config.source)
    for key, ref in _refs(config):
        line = config.origins.get(key)
        if ref is None:
            continue
        if isinstance(ref, SecretRef):
            if ref.env is not None and ref.env not in os.environ:
                problem = f"environment variable {ref.env} is not set"
                issues.append(ConfigIssue(source, line, key, problem, Severity.WARNING))
                continue
            if ref.file is None:
                continue
            ref = ref.file
        if not ref.exists():
            problem = f"{ref} does not exist"
        elif not os.access(ref, os.R_OK):
            problem = f"{ref} is not readable by this user"
        else:
            continue
        issues.append(ConfigIssue(source, line, key, problem, Severity.WARNING))
    return issues
