"""Passwords out of DSNs and URLs before they are shown (config check, errors, logs).

A database DSN may carry its password in two places: the user info
(``postgresql://user:secret@host/db``) and the query (``...?password=secret``, as libpq
and most SQLAlchemy dialects accept; also ``sslpassword``, ``pwd``...).  LDAP and HTTP URLs
can carry them the same way.  :func:`redact_url` replaces each such value with ``***`` and
leaves everything else as written, so the operator still sees which database or server is
meant; :func:`scrub` removes the same values from any text (a driver's error message that
echoes its connection string).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REDACTED = "***"

#: Query parameters whose value is a secret (lower case; also any name containing these).
_SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "secret", "token", "apikey", "api_key")


def _is_secret_param(name: str) -> bool:
    name = unquote(name).strip().lower()
    return name in _SECRET_PARAMS or any(word in name for word in ("password", "secret", "token"))


def _split(url: str) -> tuple[str, str, str, str]:
    """(scheme://, user info, rest of the authority and path, ?query#fragment)."""
    scheme, sep, tail = url.partition("://")
    if not sep:
        return "", "", url, ""
    query_at = min((i for i in (tail.find("?"), tail.find("#")) if i >= 0), default=len(tail))
    before_query, after = tail[:query_at], tail[query_at:]
    if before_query.startswith("/"):  # no authority (sqlite:///path): no user info
        return scheme + sep, "", before_query, after
    userinfo, at, rest = before_query.rpartition("@")
    return scheme + sep, userinfo + at, rest, after


def _query_secrets(query: str) -> list[tuple[int, int]]:
    """(start, end) of each secret parameter's value in ``query`` (which starts with ``?``)."""
    spans: list[tuple[int, int]] = []
    if not query.startswith("?"):
        return spans
    end = query.find("#")
    body_end = end if end >= 0 else len(query)
    for match in re.finditer(r"([^&;=]*)=([^&;#]*)", query[1:body_end]):
        if _is_secret_param(match.group(1)) and match.group(2):
            spans.append((1 + match.start(2), 1 + match.end(2)))
    return spans


def redact_url(url: str) -> str:
    """``url`` with the user-info password and password-like query values replaced by ``***``.

    >>> redact_url("postgresql://gw:s3cret@db/gw?sslmode=require&password=s3cret")
    'postgresql://gw:***@db/gw?sslmode=require&password=***'
    """
    head, userinfo, rest, query = _split(url)
    if userinfo:
        user, colon, password = userinfo[:-1].partition(":")
        if colon and password:
            userinfo = f"{user}:{REDACTED}@"
    pieces: list[str] = []
    last = 0
    for start, end in _query_secrets(query):
        pieces += [query[last:start], REDACTED]
        last = end
    return head + userinfo + rest + "".join(pieces) + query[last:]


def url_secrets(url: str) -> list[str]:
    """The secret values in ``url`` as written and percent-decoded (longest first)."""
    _, userinfo, _, query = _split(url)
    found = []
    if userinfo:
        _, colon, password = userinfo[:-1].partition(":")
        if colon and password:
            found.append(password)
    found += [query[start:end] for start, end in _query_secrets(query)]
    found += [unquote(value) for value in found]
    return sorted({value for value in found if value}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` replaced by ``***`` (and ``url`` redacted)."""
    text = text.replace(url, redact_url(url))
    for secret in url_secrets(url):
        text = text.replace(secret, REDACTED)
    return text
