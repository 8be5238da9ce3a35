"""cmcgate's own keys: gateway, policy (properties and YAML), DKIM, keys, LDAP, enrolment."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.model import NextHopTls
from config.policy import EncryptMode, MissingAction, SignMode
from config.properties import load


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(issue) for issue in caught.value.errors]


def test_gateway_keys_become_typed_settings(write_props, tmp_path):
    config = load(
        write_props(
            "cmcgate.gateway.listen=[::1]:10025\n"
            "cmcgate.gateway.nextHop=mx.example.org:2525\n"
            "cmcgate.gateway.nextHopTls=REQUIRED\n"
            "cmcgate.gateway.internalDomains=Example.org, sales.example.org\n"
            "cmcgate.gateway.maxMessageSize=10M\n"
            "cmcgate.gateway.tlsCertificate=tls.pem\n"
            "cmcgate.gateway.tlsKey=tls.key\n"
            "cmcgate.gateway.requireStartTls=true\n"
            "cmcgate.gateway.allowedNetworks=10.0.0.0/8, 192.0.2.1\n"
            "cmcgate.gateway.authUsersFile=users\n"
            "cmcgate.metrics.listen=127.0.0.1:9110\n"
            "cmcgate.enrolment.renewDaysBeforeExpiry=14\n"
            "cmcgate.enrolment.keyPoolSize=5\n"
            "cmcgate.lookup.negativeCacheTtl=15m\n"
        )
    )

    gateway = config.gateway
    assert str(gateway.listen) == "[::1]:10025"
    assert (gateway.next_hop.host, gateway.next_hop.port) == ("mx.example.org", 2525)
    assert gateway.next_hop_tls is NextHopTls.REQUIRED
    assert gateway.internal_domains == ("example.org", "sales.example.org")
    assert gateway.max_message_size == 10 * 1024 * 1024
    assert gateway.tls_certificate == tmp_path / "tls.pem"
    assert gateway.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    assert gateway.is_internal("a@SALES.example.org")
    assert str(config.metrics_listen) == "127.0.0.1:9110"
    assert (config.enrolment.renew_days_before_expiry, config.enrolment.key_pool_size) == (14, 5)
    assert config.lookup.negative_cache_ttl == 900


def test_gateway_defaults(write_props):
    config = load(write_props(""))

    assert str(config.gateway.listen) == "127.0.0.1:10025"
    assert str(config.gateway.next_hop) == "127.0.0.1:10026"
    assert config.enrolment.renew_days_before_expiry == 30
    assert config.store.dsn == "sqlite:////var/lib/cmcgate/cmcgate.db"
    assert config.keys is None


def test_inconsistent_gateway_settings_are_errors(write_props):
    path = write_props(
        "cmcgate.gateway.listen=127.0.0.1:25\n"
        "cmcgate.gateway.nextHop=127.0.0.1:25\n"
        "cmcgate.gateway.tlsCertificate=cert.pem\n"
        "cmcgate.gateway.allowedNetworks=10.0.0.1/8\n"
    )

    assert errors_of(path) == [
        f"{path}:2: cmcgate.gateway.nextHop: is the gateway's own listen address: mail would loop",
        f"{path}:3: cmcgate.gateway.tlsKey: missing: STARTTLS needs both "
        "cmcgate.gateway.tlsCertificate and cmcgate.gateway.tlsKey",
        f"{path}:4: cmcgate.gateway.allowedNetworks: '10.0.0.1/8' has host bits set: "
        "did you mean 10.0.0.0/8?",
    ]


def test_smime_choices_become_pipeline_settings(write_props):
    from config.model import SignatureFormat
    from config.render import text_lines
    from config.smime import ContentCipher, RsaKeyTransport
    from gateway.smtp.service import pipeline_settings

    default = load(write_props(""))
    assert default.smime.content_cipher is ContentCipher.AES256_CBC
    assert default.smime.rsa_key_transport is RsaKeyTransport.PKCS1V15
    assert default.smime.signature_format is SignatureFormat.DETACHED
    config = load(
        write_props(
            "cmcgate.smime.contentCipher=AES256-GCM\n"
            "cmcgate.smime.rsaKeyTransport=OAEP\n"
            "cmcgate.smime.signatureFormat=opaque\n"
        )
    )
    settings = pipeline_settings(config)
    assert settings.content_cipher is ContentCipher.AES256_GCM
    assert settings.rsa_transport is RsaKeyTransport.OAEP
    assert settings.detached_signature is False
    assert "smime.contentCipher: aes256-gcm" in text_lines(config)


def test_a_bad_smime_choice_names_its_line_and_the_valid_choices(write_props):
    path = write_props(
        "cmcgate.smime.contentCipher=des3\n"
        "cmcgate.smime.rsaKeyTransport=oaep-sha1\n"
        "cmcgate.smime.signatureFormat=clear\n"
        "cmcgate.smime.contentChiper=aes128-gcm\n"
    )
    assert errors_of(path) == [
        f"{path}:4: cmcgate.smime.contentChiper: unknown key "
        "(did you mean cmcgate.smime.contentCipher?)",
        f"{path}:1: cmcgate.smime.contentCipher: expected one of aes128-cbc, aes256-cbc, "
        "aes128-gcm, aes256-gcm, not 'des3'",
        f"{path}:2: cmcgate.smime.rsaKeyTransport: expected one of pkcs1v15, oaep, not 'oaep-sha1'",
        f"{path}:3: cmcgate.smime.signatureFormat: expected one of detached, opaque, not 'clear'",
    ]


def test_limits_and_auth_settings(write_props):
    config = load(
        write_props(
            "cmcgate.gateway.maxSessions=20\n"
            "cmcgate.gateway.idleTimeout=45\n"
            "cmcgate.gateway.authUsersFile=users\n"
            "cmcgate.gateway.allowPlaintextAuth=true\n"
            "cmcgate.gateway.requireAuth=true\n"
        )
    )
    gateway = config.gateway
    assert (gateway.max_sessions, gateway.idle_timeout) == (20, 45.0)
    assert gateway.require_auth and gateway.allow_plaintext_auth
    defaults = load(write_props("")).gateway
    assert (defaults.max_sessions, defaults.idle_timeout) == (100, 300.0)
    assert not defaults.require_auth and not defaults.allow_plaintext_auth


def test_auth_without_starttls_or_users_is_an_error(write_props):
    path = write_props(
        "cmcgate.gateway.authUsersFile=users\n"
        "cmcgate.gateway.requireAuth=true\n"
        "cmcgate.gateway.maxSessions=0\n"
        "cmcgate.gateway.idleTimeout=0.5\n"
    )
    assert errors_of(path) == [
        f"{path}:1: cmcgate.gateway.authUsersFile: AUTH is offered only after STARTTLS: "
        "needs cmcgate.gateway.tlsCertificate and cmcgate.gateway.tlsKey "
        "(or cmcgate.gateway.allowPlaintextAuth=true)",
        f"{path}:3: cmcgate.gateway.maxSessions: 0 is out of range 1-10000",
        f"{path}:4: cmcgate.gateway.idleTimeout: 0.5 is out of range 1-3600 seconds",
    ]
    path = write_props("cmcgate.gateway.requireAuth=true\n")
    assert errors_of(path) == [
        f"{path}:1: cmcgate.gateway.requireAuth: needs cmcgate.gateway.authUsersFile"
    ]


def test_policy_per_domain_and_address_most_specific_wins(write_props):
    policy = load(
        write_props(
            "cmcgate.gateway.internalDomains=example.org\n"
            "cmcgate.policy.sign=allow\n"
            "cmcgate.policy.sender.example.org.sign=always\n"
            "cmcgate.policy.sender.ceo@example.org.sign=never\n"
            "cmcgate.policy.recipient.partner.example.encrypt=mandatory\n"
            "cmcgate.policy.recipient.partner.example.missingCertificate=hold\n"
        )
    ).policy

    assert policy.resolve("a@example.org", "b@partner.example") == (
        SignMode.ALWAYS,
        EncryptMode.MANDATORY,
        MissingAction.HOLD,
    )
    assert policy.resolve("ceo@example.org", "x@other.example")[0] is SignMode.NEVER


def test_a_yaml_policy_file_adds_rules_and_reports_its_own_lines(write_props, tmp_path):
    (tmp_path / "policy.yaml").write_text(
        "encrypt: allow\n"
        "recipients:\n"
        "  partner.example: {encrypt: mandatory, missingCertificate: reject}\n"
        "senders:\n"
        "  example.org:\n"
        "    sign: always\n"
    )
    policy = load(write_props("cmcgate.policy.file=policy.yaml\n")).policy
    assert policy.resolve("a@example.org", "b@partner.example") == (
        SignMode.ALWAYS,
        EncryptMode.MANDATORY,
        MissingAction.REJECT,
    )

    (tmp_path / "policy.yaml").write_text(
        "recipients:\n  partner.example:\n    encrypt: always\n    colour: red\n"
    )
    path = write_props("cmcgate.policy.file=policy.yaml\ncmcgate.policy.encrypt=never\n")
    yaml_path = tmp_path / "policy.yaml"
    assert errors_of(path) == [
        f"{yaml_path}:3: recipients.partner.example.encrypt: expected one of never, allow, "
        "mandatory, not 'always'",
        f"{yaml_path}:4: recipients.partner.example.colour: unknown setting: expected sign, "
        "encrypt, missingCertificate",
    ]


def test_a_policy_file_that_is_no_regular_file_or_too_large_is_an_error(write_props, tmp_path):
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)  # reading it would block the loader forever
    assert errors_of(write_props(f"cmcgate.policy.file={fifo}\n")) == [
        f"{fifo}: not a regular file"
    ]
    big = tmp_path / "policy.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    assert errors_of(write_props(f"cmcgate.policy.file={big}\n")) == [
        f"{big}: larger than 1048576 bytes"
    ]


def test_a_setting_in_both_properties_and_yaml_is_an_error(write_props, tmp_path):
    (tmp_path / "policy.yaml").write_text("sign: never\n")
    path = write_props("cmcgate.policy.sign=always\ncmcgate.policy.file=policy.yaml\n")

    assert errors_of(path) == [
        f"{tmp_path / 'policy.yaml'}:1: sign: already set as cmcgate.policy.sign at {path}:1"
    ]


def test_dkim_per_sender_domain(write_props, tmp_path):
    config = load(
        write_props(
            "cmcgate.dkim.example.org.selector=mail2024\n"
            "cmcgate.dkim.example.org.keyFile=dkim/example.org.key\n"
        )
    )

    (dkim,) = config.dkim
    assert (dkim.domain, dkim.selector, dkim.key_file) == (
        "example.org",
        "mail2024",
        tmp_path / "dkim" / "example.org.key",
    )


def test_key_backends_map_to_the_backend_settings(write_props, tmp_path):
    software = load(
        write_props(
            "cmcgate.keys.backend=software\ncmcgate.keys.directory=keys\n"
            "cmcgate.keys.passphraseEnv=KEYS_PASS\n"
        )
    ).keys
    assert software is not None
    assert software.backend_kwargs() == {
        "directory": str(tmp_path / "keys"),
        "passphrase_env": "KEYS_PASS",
    }
    pkcs11 = load(
        write_props(
            "cmcgate.keys.backend=pkcs11\n"
            "cmcgate.keys.module=/usr/lib/softhsm/libsofthsm2.so\n"
            "cmcgate.keys.tokenLabel=cmcgate\n"
            "cmcgate.keys.pinFile=/etc/cmcgate/pin\n"
            "cmcgate.keys.poolSize=8\n"
        )
    ).keys
    assert pkcs11 is not None
    assert pkcs11.backend_kwargs() == {
        "module_path": "/usr/lib/softhsm/libsofthsm2.so",
        "token_label": "cmcgate",
        "pool_size": 8,
        "pin_file": "/etc/cmcgate/pin",
    }


def test_a_pkcs11_backend_needs_module_label_and_pin(write_props):
    path = write_props("cmcgate.keys.backend=pkcs11\ncmcgate.keys.directory=keys\n")

    assert errors_of(path) == [
        f"{path}:2: cmcgate.keys.directory: does not apply to the pkcs11 backend",
        f"{path}:1: cmcgate.keys.module: missing: required by cmcgate.keys.backend=pkcs11",
        f"{path}:1: cmcgate.keys.tokenLabel: missing: required by cmcgate.keys.backend=pkcs11",
        f"{path}:1: cmcgate.keys.pinFile: missing: the PKCS#11 token needs cmcgate.keys.pinFile "
        "or cmcgate.keys.pinEnv",
    ]


def test_ldap_directories_in_file_order(write_props):
    config = load(
        write_props(
            "cmcgate.lookup.ldap.partners.url=ldap://ldap.partner.example:389\n"
            "cmcgate.lookup.ldap.partners.base=o=partners\n"
            "cmcgate.lookup.ldap.corp.url=ldaps://ldap.example.org\n"
            "cmcgate.lookup.ldap.corp.base=dc=example,dc=org\n"
            "cmcgate.lookup.ldap.corp.timeout=2.5\n"
        )
    )

    assert [(d.name, d.timeout) for d in config.lookup.directories] == [
        ("partners", 5.0),
        ("corp", 2.5),
    ]


def test_ldap_errors(write_props):
    path = write_props(
        "cmcgate.lookup.ldap.corp.url=http://ldap.example.org\n"
        "cmcgate.lookup.ldap.corp.password=secret\n"
    )

    errors = errors_of(path)

    assert errors == [
        f"{path}:2: cmcgate.lookup.ldap.corp.password: secrets are not accepted inline: use "
        "cmcgate.lookup.ldap.corp.passwordFile or cmcgate.lookup.ldap.corp.passwordEnv",
        f"{path}:1: cmcgate.lookup.ldap.corp.base: missing: LDAP directory 'corp' needs url "
        "and base",
        f"{path}:1: cmcgate.lookup.ldap.corp.url: 'http://ldap.example.org' is not an ldap:// or "
        "ldaps:// URL",
    ]


def test_auto_enrolment_of_internal_users_needs_a_key_backend(write_props):
    from .conftest import SWISSSIGN_BLOCK

    text = SWISSSIGN_BLOCK.replace(
        "getFromPKIForNewIntUsers=false", "getFromPKIForNewIntUsers=true"
    )
    path = write_props(text)

    assert errors_of(path) == [
        f"{path}:9: cmcgate.keys.backend: missing: getFromPKIForNewIntUsers=true needs a key "
        "backend for the users' keys"
    ]
