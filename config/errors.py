"""Error types shared by every cmcgate package.

Every error a user can cause derives from :class:`CmcgateError`; the CLI renders it as one
line and exits 2, services render it as an SMTP reply or a CMC failInfo.  Nothing else is
allowed to escape a parser.
"""

from __future__ import annotations


class CmcgateError(Exception):
    """Base of every error cmcgate raises on purpose."""

    exit_code = 2
