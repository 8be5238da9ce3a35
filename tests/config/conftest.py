"""Helpers for the configuration tests: write a properties file, run ``cmcgate``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

SWISSSIGN_BLOCK = """\
connection.ssl.protocol=https://
connection.ssl.serverName=ra.swisssign.net
connection.ssl.serverPort=443
connection.ssl.url=/ws/cmc?account=totemoag.ra&product=totemo-persogold
security.pkiConnection.rfc2797.requestType=POST
security.pkiConnection.rfc2797.encodeRequestBase64=false
security.pkiConnection.type=rfc2797
security.pkiConnection.rfc2797.issuerDN=CN=SwissSign RSA SMIME Root CA 2022 - 1,O=SwissSign AG,C=CH
security.pkiConnection.getFromPKIForNewIntUsers=false
security.pkiConnection.getFromPKIForNewRecipients=true
security.pkiConnection.certSubjectDN=/CN=Secure Mail: Gateway Certificate /O=Organisation name/ C=CH
security.pkiConnection.enabled=true
cmcgate.pki.accessCertificate=access.p12
cmcgate.pki.accessCertificatePasswordFile=access.pass
cmcgate.pki.trustedRoots=roots.pem
"""


@pytest.fixture
def write_props(tmp_path: Path) -> Callable[[str], Path]:
    counter = iter(range(1000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"cmcgate-{next(counter)}.properties")
        path.write_text(text, encoding="utf-8")
        return path

    return write
