"""The shipped systemd units are valid and hardened."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).resolve().parents[1] / "systemd").glob("*.service"))


def test_both_units_are_shipped() -> None:
    assert {u.name for u in UNITS} == {"cmcgate-gateway.service", "cmcgate-ca.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_runs_as_dedicated_user_with_reload_and_hardening(unit: Path) -> None:
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["User"].startswith("cmcgate")
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert lines["StateDirectory"].startswith("cmcgate/")
    assert lines["ProtectSystem"] == "strict"
    assert lines["PrivateTmp"] == "yes"
    assert lines["NoNewPrivileges"] == "yes"
    assert lines["CapabilityBoundingSet"] == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_accepts_unit(unit: Path, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's cmcgate script.
    cmcgate = Path(sys.executable).parent / "cmcgate"
    text = unit.read_text().replace("/opt/cmcgate/.venv/bin/cmcgate", str(cmcgate))
    copy = tmp_path / unit.name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def _deployment_block(lang: str) -> str:
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "deployment.md").read_text()
    section = text[text.index("## Installing with systemd") :]
    return str(re.findall(rf"```{lang}\n(.*?)```", section, re.S)[0])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_the_documented_credentials_drop_in_verifies_with_the_gateway_unit(tmp_path: Path) -> None:
    """docs/deployment.md: the LoadCredential drop-in, and the properties that read it."""
    unit = next(u for u in UNITS if u.name == "cmcgate-gateway.service")
    cmcgate = Path(sys.executable).parent / "cmcgate"
    (tmp_path / unit.name).write_text(
        unit.read_text().replace("/opt/cmcgate/.venv/bin/cmcgate", str(cmcgate))
    )
    drop_in = tmp_path / f"{unit.name}.d" / "credentials.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(_deployment_block("ini"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and str(tmp_path) not in output, output
    credentials = {
        line.split("=", 1)[1].split(":", 1)[0]
        for line in drop_in.read_text().splitlines()
        if line.startswith("LoadCredential=")
    }
    properties = _deployment_block("properties")
    for name in credentials:
        assert f"/run/credentials/{unit.name}/{name}" in properties
