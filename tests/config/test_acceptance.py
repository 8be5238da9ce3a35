"""The issue's acceptance strings, through the real ``cmcgate`` entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_a_misspelt_key_on_line_7_is_reported_with_the_key_it_resembles(write_props, capsys):
    lines = [
        "# pasted from Totemo",
        "connection.ssl.protocol=https://",
        "connection.ssl.serverName=ra.swisssign.net",
        "connection.ssl.serverPort=443",
        "connection.ssl.url=/ws/cmc?account=totemoag.ra&product=totemo-persogold",
        "security.pkiConnection.type=rfc2797",
        "security.pkiConnection.rfc2797.requestTyp=POST",
    ]
    path = write_props("\n".join(lines) + "\n")

    status = main(["config", "check", str(path)])

    err = capsys.readouterr().err.splitlines()
    assert status == 2
    assert (
        f"{path}:7: security.pkiConnection.rfc2797.requestTyp: unknown key "
        "(did you mean security.pkiConnection.rfc2797.requestType?)"
    ) in err
    assert not any(line.startswith("cmcgate:") for line in err)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("connection.ssl.serverPort=99999", "connection.ssl.serverPort: 99999 is out of range"),
        ("security.pkiConnection.enabled=yes", "security.pkiConnection.enabled: expected true"),
    ],
)
def test_a_bad_port_or_boolean_is_an_error_on_its_line(write_props, capsys, line, expected):
    path = write_props("# one\n# two\n" + line + "\n")

    status = main(["config", "check", str(path)])

    err = capsys.readouterr().err
    assert status == 2
    assert f"{path}:3: {expected}" in err


def test_the_swisssign_example_checks_and_shows_server_port_query_issuer_and_template(capsys):
    status = main(["config", "check", str(EXAMPLES / "swisssign.properties")])

    out = capsys.readouterr().out
    assert status == 0
    assert "pki.serverName: ra.swisssign.net" in out
    assert "pki.serverPort: 443" in out
    assert "pki.account: totemoag.ra" in out
    assert "pki.product: totemo-persogold" in out
    assert "pki.validity: -" in out
    assert "pki.issuerDN: CN=SwissSign RSA SMIME Root CA 2022 - 1,O=SwissSign AG,C=CH" in out
    assert "pki.certSubjectDN: CN=Secure Mail: Gateway Certificate,O=Organisation name,C=CH" in out
    assert (
        "pki.url: https://ra.swisssign.net:443/ws/cmc?account=totemoag.ra&product=totemo-persogold"
        in out
    )


@pytest.mark.parametrize(
    "name", ["swisssign.properties", "bundled-ca.properties", "gateway-local.properties"]
)
def test_every_shipped_example_passes_config_check(name, capsys):
    status = main(["config", "check", "--json", str(EXAMPLES / name)])

    captured = capsys.readouterr()
    assert status == 0, captured.err
    data = json.loads(captured.out)
    assert data["source"].endswith(name)
    # missing referenced files are warnings, never errors
    assert all(": warning: " in line for line in captured.err.splitlines())


def test_the_bundled_ca_example_asks_localhost_for_a_one_year_silver_certificate(capsys):
    main(["config", "check", "--json", str(EXAMPLES / "bundled-ca.properties")])

    pki = json.loads(capsys.readouterr().out)["pki"]
    assert pki["url"] == (
        "https://localhost:8443/ws/cmc?account=totemoag.ra&product=totemo-persogold&validity=1y"
    )
    assert (pki["account"], pki["product"], pki["validity"]) == (
        "totemoag.ra",
        "totemo-persogold",
        "1y",
    )
    assert pki["productKind"] == "silver"


def test_the_local_gateway_example_signs_always_and_encrypts_when_it_can(capsys):
    main(["config", "check", "--json", str(EXAMPLES / "gateway-local.properties")])

    data = json.loads(capsys.readouterr().out)
    assert data["gateway"]["listen"] == "127.0.0.1:10025"
    assert data["gateway"]["nextHop"] == "127.0.0.1:10026"
    assert data["gateway"]["internalDomains"] == ["example.org"]
    assert (data["policy"]["sign"], data["policy"]["encrypt"]) == ("always", "allow")
    assert data["pki"] is None
