"""The ``cmcgate`` root: ``--help``/``--version`` load no command group, errors stay one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.main import GROUPS, main

CMCGATE = str(Path(sys.executable).parent / "cmcgate")

_PROBE = """
import json, sys
from gateway.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
loaded = [m for m in sys.modules if m.split(".")[0] in ("ca", "cmc", "gateway", "config")]
print(json.dumps({"loaded": loaded, "crypto": "cryptography" in sys.modules}), file=sys.stderr)
"""


def _loaded_by(*argv: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    return dict(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_load_no_command_group(argv: list[str]) -> None:
    probe = _loaded_by(*argv)
    assert set(probe["loaded"]) <= {"gateway", "gateway.main", "config", "config.errors"}  # type: ignore[arg-type]
    assert probe["crypto"] is False


def test_a_group_loads_only_its_own_module() -> None:
    loaded = set(_loaded_by("config", "--help")["loaded"])  # type: ignore[arg-type]
    assert "config.commands" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("ca", "cmc")}


def test_help_lists_every_group_and_version_prints_the_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, (_, help_text) in GROUPS.items():
        assert name in out and help_text in out
    result = subprocess.run([CMCGATE, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("cmcgate 0.")


def test_a_group_registers_the_help_the_root_shows() -> None:
    """The root's table and each group's own ``register`` agree on the one-line help."""
    import argparse
    import importlib

    for name, (module, help_text) in GROUPS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        (action,) = sub._choices_actions
        assert (action.dest, action.help) == (name, help_text)
