"""The PKI-connection block as a Totemo admin writes it (reference 000), for a given CA.

Used wherever cmcgate itself has to produce a gateway configuration — the demo, the tests
and the benches that point a gateway at the bundled CA — so all of them exercise exactly the
keys and spellings of the seed (``connection.ssl.*``, ``security.pkiConnection.*``), plus
cmcgate's keys for what Totemo keeps in its GUI (access certificate, imported roots).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def pki_connection_properties(
    *,
    server_name: str,
    server_port: int,
    account: str,
    product: str,
    issuer_dn: str,
    access_p12: Path,
    access_password_file: Path,
    trusted_roots: Path,
    validity: str | None = "1y",
    subject_template: str = "CN=Secure Mail: Gateway Certificate",
    enrol_internal_users: bool = True,
    fetch_for_recipients: bool = True,
    type_: str = "rfc2797",
    extra: Mapping[str, object] | None = None,
    url: str | None = None,
) -> str:
    """Properties text: the seed's keys verbatim, then ``cmcgate.pki.*`` and ``extra``.

    ``url`` replaces the ``/ws/cmc?account=...&product=...&validity=...`` path built from
    ``account``, ``product`` and ``validity``.
    """
    query = f"account={account}&product={product}" + (f"&validity={validity}" if validity else "")
    path = url or f"/ws/cmc?{query}"
    lines = [
        "connection.ssl.protocol=https://",
        f"connection.ssl.serverName={server_name}",
        f"connection.ssl.serverPort={server_port}",
        f"connection.ssl.url={path}",
        "security.pkiConnection.rfc2797.requestType=POST",
        "security.pkiConnection.rfc2797.encodeRequestBase64=false",
        f"security.pkiConnection.type={type_}",
        f"security.pkiConnection.rfc2797.issuerDN={issuer_dn}",
        f"security.pkiConnection.getFromPKIForNewIntUsers={str(enrol_internal_users).lower()}",
        f"security.pkiConnection.getFromPKIForNewRecipients={str(fetch_for_recipients).lower()}",
        f"security.pkiConnection.certSubjectDN={subject_template}",
        "security.pkiConnection.enabled=true",
        f"cmcgate.pki.accessCertificate={access_p12}",
        f"cmcgate.pki.accessCertificatePasswordFile={access_password_file}",
        f"cmcgate.pki.trustedRoots={trusted_roots}",
    ]
    lines += [f"{key}={value}" for key, value in (extra or {}).items()]
    return "\n".join(lines) + "\n"
