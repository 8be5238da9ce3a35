"""The entries of one properties file, with typed getters that collect issues.

:class:`Props` never raises on a bad value: it records ``FILE:LINE: KEY: problem`` and hands
back the default, so that one load reports every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from config.errors import ConfigIssue, DnError, Severity
from config.keys import classify
from config.reader import Entry
from config.values import ValueProblem, parse_path, split_list

T = TypeVar("T")
D = TypeVar("D")


class Props:
    def __init__(self, path: Path, entries: list[Entry], issues: list[ConfigIssue]) -> None:
        self.path = path
        self.name = str(path)
        self.base_dir = path.absolute().parent
        self.issues: list[ConfigIssue] = list(issues)
        self.values: dict[str, Entry] = {}
        self.spelling: dict[str, str] = {}  # canonical key -> key as written
        for entry in entries:
            self._add(entry)

    def _add(self, entry: Entry) -> None:
        key = entry.key
        kind = classify(key)
        if kind.secret_hint:
            self.error(key, f"secrets are not accepted inline: use {kind.secret_hint}", entry.line)
            return
        if not kind.known:
            hint = f" (did you mean {kind.suggestion}?)" if kind.suggestion else ""
            if kind.strict:
                self.error(key, f"unknown key{hint}", entry.line)
            elif key:
                self.warn(key, f"not a cmcgate key, ignored{hint}", entry.line)
            return
        canonical = kind.canonical
        previous = self.values.get(canonical)
        if previous is not None:
            first = self.spelling[canonical]
            if first != key:
                self.error(key, f"also set as {first} on line {previous.line}", entry.line)
                return
            self.warn(
                key, f"set again (first on line {previous.line}): the last value wins", entry.line
            )
        self.values[canonical] = entry
        self.spelling[canonical] = key

    # -- issues ---------------------------------------------------------------------------
    def error(self, key: str, problem: str, line: int | None = None) -> None:
        self.issues.append(ConfigIssue(self.name, line, key, problem))

    def warn(self, key: str, problem: str, line: int | None = None) -> None:
        self.issues.append(ConfigIssue(self.name, line, key, problem, Severity.WARNING))

    @property
    def has_errors(self) -> bool:
        return any(issue.is_error for issue in self.issues)

    # -- values ---------------------------------------------------------------------------
    def line(self, key: str) -> int | None:
        entry = self.values.get(key)
        return entry.line if entry is not None else None

    def written(self, key: str) -> str:
        return self.spelling.get(key, key)

    def raw(self, key: str) -> str | None:
        """The trimmed value, or None when the key is absent or empty."""
        entry = self.values.get(key)
        if entry is None:
            return None
        return entry.value.strip() or None

    def get(self, key: str, parse: Callable[[str], T], default: D) -> T | D:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueProblem, DnError) as exc:
            self.error(self.written(key), str(exc), self.line(key))
            return default

    def require(
        self, key: str, parse: Callable[[str], T], *, because: str, because_key: str
    ) -> T | None:
        """Like get, but a missing value is an error located at ``because_key``'s line."""
        if self.raw(key) is None:
            self.error(key, f"missing: required {because}", self.line(because_key))
            return None
        return self.get(key, parse, None)

    def get_path(self, key: str) -> Path | None:
        """A path value; relative paths are relative to the file's directory."""
        return self.get(key, lambda value: parse_path(value, self.base_dir), None)

    def get_paths(self, key: str) -> tuple[Path, ...]:
        """A comma-separated list of paths, each relative to the file's directory."""
        return self.get(
            key, lambda v: tuple(parse_path(item, self.base_dir) for item in split_list(v)), ()
        )

    def family(self, prefix: str) -> list[str]:
        """Known keys under ``prefix`` in file order."""
        keys = [key for key in self.values if key.startswith(prefix)]
        return sorted(keys, key=lambda key: self.values[key].line)
