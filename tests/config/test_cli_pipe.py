"""``cmcgate ... | head``: a reader that goes away early ends the command quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CMCGATE = str(Path(sys.executable).parent / "cmcgate")


def many_rules(tmp_path: Path) -> Path:
    """A valid file whose ``config check`` output (one line per rule) is ~350 KB: far more
    than a pipe holds, so the writer is still writing when ``head`` has gone."""
    rules = "".join(f"cmcgate.policy.sender.user{i}@example.org.sign=never\n" for i in range(3000))
    path = tmp_path / "many.properties"
    path.write_text(
        "cmcgate.gateway.internalDomains=example.org\n"
        "cmcgate.policy.sign=allow\n"
        f"cmcgate.store.dsn=sqlite:///{tmp_path / 'gateway.db'}\n" + rules
    )
    return path


def test_piped_into_head_the_command_exits_without_a_traceback(tmp_path: Path) -> None:
    path = many_rules(tmp_path)
    done = subprocess.run(
        ["bash", "-c", f'"{CMCGATE}" config check "{path}" | head -1; exit "${{PIPESTATUS[0]}}"'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout == f"{path}: OK\n"
    assert done.stderr == ""
    assert done.returncode == 141  # what a shell shows for a tool ended by SIGPIPE


def test_output_into_a_pipe_without_reader_is_quiet(tmp_path: Path) -> None:
    path = many_rules(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails
    try:
        done = subprocess.run(
            [CMCGATE, "config", "check", str(path)],
            stdout=write_end, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert done.stderr == b""
    assert done.returncode == 141
