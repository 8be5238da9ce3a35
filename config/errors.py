"""Error types shared by every cmcgate package.

Every error a user can cause derives from :class:`CmcgateError`; the CLI renders it as one
line and exits 2, services render it as an SMTP reply or a CMC failInfo.  Nothing else is
allowed to escape a parser.

Configuration problems are :class:`ConfigIssue` values located as ``FILE:LINE: KEY: problem``;
:class:`ConfigError` carries all issues of one load (``str()`` renders one per line).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class CmcgateError(Exception):
    """Base of every error cmcgate raises on purpose."""

    exit_code = 2


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file.

    ``line`` is 1-based (the first physical line of a continued entry) or None when the
    problem has no line (a missing file); ``key`` may be empty when the problem is not about
    one key.
    """

    path: str
    line: int | None
    key: str
    problem: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        parts = [where]
        if self.key:
            parts.append(self.key)
        if self.severity is Severity.WARNING:
            parts.append("warning")
        parts.append(self.problem)
        return ": ".join(parts)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class ConfigError(CmcgateError):
    """A configuration that cannot be used; carries every error found, not just the first.

    ``str()`` renders the errors, one per line; ``warnings`` are kept apart so that a caller
    can show them too.
    """

    def __init__(self, errors: Iterable[ConfigIssue], warnings: Iterable[ConfigIssue] = ()) -> None:
        self.errors: tuple[ConfigIssue, ...] = tuple(errors)
        self.warnings: tuple[ConfigIssue, ...] = tuple(warnings)
        super().__init__("\n".join(str(issue) for issue in self.errors) or "invalid configuration")


class DnError(CmcgateError):
    """A distinguished name or subject template that cannot be used."""


class SecretError(CmcgateError):
    """A secret (password, PIN) whose file or environment variable cannot be read."""
