"""Reading a ``.properties`` file into entries that remember their line.

javaproperties decodes each entry (separators ``=``, ``:`` or whitespace, escapes, ``\\uXXXX``,
continuation lines); this module finds the logical lines itself so that every entry knows the
physical line it starts on, and so that one bad ``\\u`` escape costs one entry, not the file.

Physical lines end with ``\\n``, ``\\r\\n`` or ``\\r`` (as in Java).  A line whose first
non-blank character is ``#`` or ``!`` is a comment (never continued); a line ending in an odd
number of backslashes continues on the next one.  Files are read as UTF-8, or as ISO-8859-1
(Java's historical encoding) when they are not valid UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import javaproperties

from config.errors import ConfigError, ConfigIssue

_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
_BLANK = " \t\f"
#: A larger file is certainly not a configuration file; refuse it before reading it all.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One ``key=value`` of a properties file; ``line`` is where the entry starts (1-based)."""

    key: str
    value: str
    line: int


def physical_lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their terminators (``\\n``, ``\\r\\n`` or ``\\r``)."""
    for match in _LINE_RE.finditer(text):
        if match.group():
            yield match.group()


def _continues(line: str) -> bool:
    body = line.rstrip("\r\n")
    trailing = len(body) - len(body.rstrip("\\"))
    return trailing % 2 == 1


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, source) of every entry-bearing logical line; comments skipped."""
    lines = list(physical_lines(text))
    index = 0
    while index < len(lines):
        start = index
        stripped = lines[index].lstrip(_BLANK)
        index += 1
        if not stripped.strip(_BLANK + "\r\n") or stripped[0] in "#!":
            continue
        source = lines[start]
        while _continues(source) and index < len(lines):
            source += lines[index]
            index += 1
        yield start + 1, source


def _raw_key(source: str) -> str:
    """The key as written (for messages about entries javaproperties cannot decode)."""
    head = source.lstrip(_BLANK)
    match = re.match(r"(?:\\.|[^=:\s\\])*", head)
    return match.group() if match else ""


def parse_text(text: str, path: str) -> tuple[list[Entry], list[ConfigIssue]]:
    """Entries in file order (duplicates included) and the issues found while decoding."""
    entries: list[Entry] = []
    issues: list[ConfigIssue] = []
    for line, source in logical_lines(text):
        try:
            elements = list(javaproperties.parse(source))
        except ValueError as exc:  # InvalidUEscapeError is a ValueError
            problem = f"cannot decode this entry: {exc}"
            issues.append(ConfigIssue(path, line, _raw_key(source)[:80], problem))
            continue
        for element in elements:
            if isinstance(element, javaproperties.KeyValue):
                entries.append(Entry(element.key, element.value, line))
    return entries, issues


def decode(data: bytes) -> str:
    """UTF-8, or ISO-8859-1 when the bytes are not UTF-8 (every byte string decodes)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.removeprefix("\ufeff")


def read_file(path: Path) -> tuple[list[Entry], list[ConfigIssue]]:
    """Entries of the file at ``path``; a file that cannot be read raises ConfigError."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([ConfigIssue(str(path), None, "", f"cannot read: {reason}")]) from None
    if len(data) > MAX_FILE_BYTES:
        problem = f"larger than {MAX_FILE_BYTES} bytes: not a configuration file"
        raise ConfigError([ConfigIssue(str(path), None, "", problem)])
    return parse_text(decode(data), str(path))
