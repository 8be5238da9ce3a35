"""The commented ca.yaml that ``cmcgate ca init`` writes."""

from __future__ import annotations

import json
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID


def _q(value: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(value)


def _dn(common_name: str, organisation: str, country: str) -> str:
    """RFC 4514 text of C, O, CN (in DER order; the text lists CN first)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    ).rfc4514_string()


def dump_default_ca_yaml(
    *,
    key_backend: str = "pkcs11",
    pkcs11_module: str | None = None,
    token_label: str = "cmcgate",  # noqa: S107 - a token label, not a secret
    pin_file: str = "hsm.pin",
    software_dir: str = "keys",
    passphrase_file: str = "keys.pass",  # noqa: S107 - a file name
    base_url: str = "http://127.0.0.1:8480",
    listen: str = "127.0.0.1:8480",
    database: str | None = None,
    account_id: str = "totemoag.ra",
    organisation_name: str = "Example AG",
    organization_identifier: str | None = None,
    country: str = "CH",
    email_domains: Sequence[str] = ("example.com",),
    ra_certificate_sha256: Sequence[str] = (),
    product_id: str = "totemo-persogold",
    ldap_url: str | None = None,
    ldap_bind_dn: str = "cn=admin,dc=example,dc=com",
    ldap_base_dn: str = "ou=people,dc=example,dc=com",
    ldap_password_file: str = "ldap.pass",  # noqa: S107 - a file name
    root_key_type: str = "rsa4096",
    issuing_key_type: str = "rsa3072",
    product_profile: str = "mailbox",
    product_approval: str = "auto",
) -> str:
    """ca.yaml text with comments; relative paths are relative to the file's directory.

    The result parses with :func:`ca.settings.loader.parse_ca_settings` for any arguments that are
    themselves valid (the tests check the defaults and a software-key variant).
    """
    module = _q(pkcs11_module) if pkcs11_module else "auto  # auto: find SoftHSM2 (development)"
    db_line = (
        f"  database: {_q(database)}"
        if database
        else "  # database: postgresql+psycopg://cmcgate@db/cmcgate  (default: sqlite:///ca.db)"
    )
    org_id = (
        f"      organization_identifier: {_q(organization_identifier)}"
        if organization_identifier
        else "      # organization_identifier: NTRCH-CHE-123.456.789"
    )
    domains = "\n".join(f"      - {_q(d)}" for d in email_domains)
    if ra_certificate_sha256:
        ra = "\n".join(f"      - sha256: {_q(fp)}" for fp in ra_certificate_sha256)
    else:
        ra = '      # - sha256: "<SHA-256 of the RA access certificate, hex>"\n' + (
            '      # - subject: "CN=Totemo RA,O=Example AG,C=CH"'
        )
    ra_block = (
        "    ra_certificates:\n" if ra_certificate_sha256 else "    # ra_certificates:\n"
    ) + ra
    if ldap_url:
        ldap = (
            "  ldap:\n"
            f"    url: {_q(ldap_url)}\n"
            f"    bind_dn: {_q(ldap_bind_dn)}\n"
            f"    password_file: {_q(ldap_password_file)}\n"
            f"    base_dn: {_q(ldap_base_dn)}"
        )
    else:
        ldap = (
            "  # ldap:\n"
            '  #   url: "ldap://127.0.0.1:389"\n'
            f"  #   bind_dn: {_q(ldap_bind_dn)}\n"
            f"  #   password_file: {_q(ldap_password_file)}\n"
            f"  #   base_dn: {_q(ldap_base_dn)}"
        )
    return f"""\
# cmcgate bundled CA settings (ca.yaml), first written by `cmcgate ca init`.
# Relative paths are relative to this file's directory.
version: 1

ca:
  # where the CA keeps its certificates, CRLs and (by default) its database
  directory: .
{db_line}
  # the CA's HTTP service (CMC endpoint, CRL, AIA)
  listen: {_q(listen)}
  # base of the CRL distribution point and AIA caIssuers URLs put into certificates (http://)
  base_url: {_q(base_url)}
  keys:
    # pkcs11 (an HSM; SoftHSM2 for development) or software (encrypted files, tests only)
    backend: {key_backend}
    pkcs11:
      module: {module}
      token_label: {_q(token_label)}
      pin_file: {_q(pin_file)}        # or pin_env: NAME_OF_VARIABLE
    software:
      directory: {_q(software_dir)}
      passphrase_file: {_q(passphrase_file)}
  root:
    key_label: "cmcgate-root"
    key_type: {root_key_type}
    certificate: "root-ca.pem"
    subject: {_q(_dn("cmcgate Root CA", organisation_name, country))}
  issuing:
    key_label: "cmcgate-issuing"
    key_type: {issuing_key_type}
    certificate: "issuing-ca.pem"
    subject: {_q(_dn("cmcgate S/MIME Issuing CA", organisation_name, country))}
  crl:
    next_update_hours: 24       # at most 240 (S/MIME BR: 10 days)
  # audit:
  #   hmac_key_file: "audit.key"  # MAC every audit record with this key (stronger mode)
  # LDAP directory the CA publishes issued certificates to (and removes revoked ones from)
{ldap}

# who may order certificates: one entry per RA account (a CMC client)
accounts:
  {account_id}:
    organisation:
      name: {_q(organisation_name)}
{org_id}
      country: {_q(country)}
    # domains whose mailboxes this account may order certificates for
    email_domains:
{domains}
    # the RA/access certificates that authenticate this account (by SHA-256 or subject)
{ra_block}
    products: [{product_id}]

# what can be ordered
products:
  {product_id}:
    profile: {product_profile}            # mailbox | sponsor | organization (S/MIME BR)
    validities: [1y, 2y]        # d, m or y; at most 825 days
    key_types: [rsa2048, rsa3072, rsa4096, ec-p256, ec-p384]
    approval: {product_approval}              # auto | manual (an RA operator authorizes each order)
    allow_simple_request: false # accept a bare PKCS#10 (RFC 5272 Simple PKI Request)
    publish_ldap: {"true" if ldap_url else "false"}
    # key_generation: csr       # csr | pkcs12 (the CA makes the key, PIN-protected PKCS#12) | both
    # mailbox_validation: false # true: addresses outside validated domains get an email challenge

# the RA service (docs/ra-api.md, docs/ra-mail.md): REST API, DNS domain pre-validation, CAA,
# mail notifications and challenges, PKCS#12 pick-up. Every key is optional.
# ra:
#   listen: "127.0.0.1:8444"             # REST API over HTTPS (or: ca serve --ra-listen)
#   public_url: "https://ra.example.com:8444"   # links in mails
#   caa_identities: ["ca.example.com"]   # RFC 9495 issuemail values naming this CA: CAA is
#                                        # checked at PRE_VALIDATION when set
#   dns: {{nameservers: ["127.0.0.1"], port: 53}}   # default: the system resolver
#   mail: {{host: "127.0.0.1", port: 25, from: "CA <ca@example.com>"}}
#   notifications: {{expiry_warning_days: [30, 7]}}
"""
