"""The shipped systemd units are valid and hardened."""

from __future__ import annotations

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
