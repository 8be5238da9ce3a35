"""SMTP AUTH for the front: the users file, its password hashes, ``gateway passwd``, and
:class:`AuthenticatingSMTP`, the part of the front's protocol that checks passwords.

The file (``cmcgate.gateway.authUsersFile``) has one user per line, ``NAME:HASH``; blank
lines and lines starting with ``#`` are ignored.  HASH is scrypt (RFC 7914, ``hashlib``) in
the modular-crypt layout ``$scrypt$ln=15,r=8,p=1$SALT$KEY`` (SALT and KEY base64 without
padding; ``ln`` is log2 of the cost N).  ``cmcgate gateway passwd`` writes such lines; no
password is ever stored or logged in clear.

Checking a password costs scrypt's time and memory (N=2^15, r=8: 32 MiB, ~0.1-0.2 s), so it
runs on a small thread pool of its own, off the front's event loop and bounded in memory
whatever the number of clients trying; a name/password pair that was accepted before is
recognised again from a keyed digest kept in memory, without scrypt.

AUTH (PLAIN and LOGIN, RFC 4954) is offered only with a users file, and only after STARTTLS
unless ``allowPlaintextAuth`` says otherwise (Postfix ``smtpd_tls_auth_only``); without a
users file EHLO does not mention AUTH and the command gets ``503 5.5.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import getpass
import hashlib
import hmac
import logging
import os
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

from config.errors import CmcgateError

log = logging.getLogger("cmcgate.gateway")

#: cost of new hashes: N = 2**LOG2_N, block size R, parallelism P
LOG2_N, R, P = 15, 8, 1
KEY_BYTES, SALT_BYTES = 32, 16
_HASH = re.compile(
    r"\$scrypt\$ln=(?P<ln>[0-9]{1,2}),r=(?P<r>[0-9]{1,2}),p=(?P<p>[0-9]{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]{16,88})\$(?P<key>[A-Za-z0-9+/]{32,88})"
)
_NAME = re.compile(r"[^\s:#\x00-\x1f\x7f][^\s:\x00-\x1f\x7f]{0,254}")
#: at most this many checks at once (each takes 128 * R * N bytes)
VERIFY_THREADS = 2
MAX_LINE_BYTES = 1024


class AuthUsersError(CmcgateError):
    """The users file cannot be used."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass(frozen=True)
class ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def new(cls, password: bytes) -> ScryptHash:
        salt = os.urandom(SALT_BYTES)
        return cls(LOG2_N, R, P, salt, _scrypt(password, salt, LOG2_N, R, P, KEY_BYTES))

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        match = _HASH.fullmatch(text)
        if match is None:
            raise ValueError("not a $scrypt$ln=..,r=..,p=..$salt$key hash")
        log2_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
        if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16 and r * p < 64):
            raise ValueError(f"scrypt cost ln={log2_n},r={r},p={p} is out of range")
        try:
            salt, key = _unb64(match["salt"]), _unb64(match["key"])
        except (binascii.Error, ValueError):
            raise ValueError("salt or key is not base64") from None
        return cls(log2_n, r, p, salt, key)

    def __str__(self) -> str:
        params = f"ln={self.log2_n},r={self.r},p={self.p}"
        return f"$scrypt${params}${_b64(self.salt)}${_b64(self.key)}"

    def matches(self, password: bytes) -> bool:
        derived = _scrypt(password, self.salt, self.log2_n, self.r, self.p, len(self.key))
        return hmac.compare_digest(derived, self.key)


def _scrypt(password: bytes, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=2 * 128 * r * n * p + (1 << 20)
    )


_DUMMY = ScryptHash(LOG2_N, R, P, b"\0" * SALT_BYTES, b"\0" * KEY_BYTES)
_VERIFIER = ThreadPoolExecutor(max_workers=VERIFY_THREADS, thread_name_prefix="cmcgate-auth")


@dataclass
class SmtpUsers:
    """The users of one users file (read once; a reload reads the file again)."""

    path: Path
    hashes: dict[str, ScryptHash]
    _seen: set[bytes] = field(default_factory=set, repr=False)
    _secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)

    def check(self, name: str, password: bytes) -> bool:
        """Whether ``password`` is ``name``'s (blocking: scrypt; unknown names cost the same)."""
        digest = hmac.new(self._secret, name.encode() + b"\0" + password, "sha256").digest()
        if digest in self._seen:
            return True
        known = self.hashes.get(name)
        ok = (known or _DUMMY).matches(password) and known is not None
        if ok:
            self._seen.add(digest)
        return ok

    async def verify(self, name: bytes, password: bytes) -> str | None:
        """The user's name when ``password`` is right, else None (off the event loop)."""
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            return None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(_VERIFIER, self.check, text, password)
        return text if ok else None


def load_users(path: Path) -> SmtpUsers:
    """Read the users file; :class:`AuthUsersError` naming file and line when it is bad."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuthUsersError(f"{path}: SMTP users file: {exc.strerror or exc}") from None
    hashes: dict[str, ScryptHash] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        if len(raw) > MAX_LINE_BYTES:
            raise AuthUsersError(f"{where}: line too long")
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise AuthUsersError(f"{where}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        name, colon, text = line.partition(":")
        if not colon or not _NAME.fullmatch(name):
            raise AuthUsersError(f"{where}: expected NAME:HASH")
        if name in hashes:
            raise AuthUsersError(f"{where}: user {name!r} appears twice")
        try:
            hashes[name] = ScryptHash.parse(text)
        except ValueError as exc:
            raise AuthUsersError(f"{where}: {name}: {exc}") from None
    return SmtpUsers(path, hashes)


# -- the protocol side ----------------------------------------------------------------------
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"


class AuthenticatingSMTP(SMTP):
    """aiosmtpd's SMTP whose AUTH checks the users of ``handler.front`` (see module doc).

    ``handler.front`` (:class:`gateway.smtp.server.FrontSettings`) is read once per connection:
    ``users`` (None: no AUTH), ``require_auth``, ``auth_over_plaintext``.  aiosmtpd parses
    PLAIN and LOGIN and hands the credentials to :meth:`_authenticate`, synchronously; they
    are kept there and checked afterwards off the loop (:meth:`SmtpUsers.verify`).
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        front = getattr(handler, "front", None)
        self._users: SmtpUsers | None = getattr(front, "users", None)
        kwargs["auth_required"] = self._users is not None and getattr(front, "require_auth", False)
        kwargs["auth_require_tls"] = not getattr(front, "auth_over_plaintext", False)
        kwargs.pop("authenticator", None)
        super().__init__(handler, **kwargs)
        self._credentials: LoginPassword | None = None
        self._ehlo_hook = self._handle_hooks.get("EHLO") if self._ehlo_hook_ver == "new" else None
        self._handle_hooks["EHLO"] = self._ehlo
        self._ehlo_hook_ver = "new"

    async def _ehlo(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self._ehlo_hook is not None:
            responses = await self._ehlo_hook(server, session, envelope, hostname, responses)
        else:
            session.host_name = hostname
        if self._users is None:
            responses = [line for line in responses if not line[4:].upper().startswith("AUTH")]
        return responses

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's naming
        if self._users is None:
            await self.push(AUTH_NOT_ENABLED)
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._verified(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._verified(await super().auth_LOGIN(_, args))

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        self._credentials = auth_data  # checked by _verified once aiosmtpd returns
        return AuthResult(success=False, handled=False)

    async def _verified(self, parsed: AuthResult) -> AuthResult:
        credentials, self._credentials = self._credentials, None
        if credentials is None or self._users is None:
            return parsed  # aiosmtpd refused it already (bad base64, "*")
        peer = self.session.peer if self.session is not None else None
        name = await self._users.verify(credentials.login, credentials.password)
        if name is None:
            login = credentials.login[:64].decode("utf-8", "replace")
            log.warning("AUTH failed for %r from %s", login, peer)
            return AuthResult(success=False, handled=False)  # 535 5.7.8
        log.info("AUTH ok for %s from %s", name, peer)
        return AuthResult(success=True, auth_data=name)


# -- cmcgate gateway passwd ----------------------------------------------------------------
def set_password(path: Path, name: str, password: bytes | None) -> bool:
    """Add or replace ``name``'s line (``password`` None: remove it); returns whether the
    user was there before.  The file is replaced atomically and readable by its owner only."""
    if not _NAME.fullmatch(name):
        raise AuthUsersError(f"{name!r} cannot be a user name (no ':', spaces or leading '#')")
    lines: list[str] = []
    existed = False
    if path.exists():
        load_users(path)  # refuse to rewrite a file that is already broken
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().partition(":")[0] == name and not line.lstrip().startswith("#"):
                existed = True
                continue
            lines.append(line)
    if password is not None:
        lines.append(f"{name}:{ScryptHash.new(password)}")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return existed


def _read_password(from_stdin: bool) -> bytes:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New SMTP password: ")
        if getpass.getpass("Again: ") != password:
            raise AuthUsersError("the two passwords differ")
    if not password:
        raise AuthUsersError("empty password")
    return password.encode("utf-8")


def cmd_passwd(args: argparse.Namespace) -> int:
    if args.users_file:
        path = Path(args.users_file)
    else:
        from config.properties import load

        configured = load(args.config).gateway.auth_users_file
        if configured is None:
            raise AuthUsersError(f"{args.config}: cmcgate.gateway.authUsersFile is not set")
        path = configured
    password = None if args.delete else _read_password(args.password_stdin)
    existed = set_password(path, args.user, password)
    if args.delete:
        print(f"{args.user}: {'removed' if existed else 'was not there'} ({path})")
    else:
        print(f"{args.user}: password {'changed' if existed else 'set'} ({path})")
    return 0


def register_passwd(gateway_subparsers: Any) -> None:
    parser: argparse.ArgumentParser = gateway_subparsers.add_parser(
        "passwd", help="set or remove an SMTP AUTH user's password (scrypt hashed)"
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the gateway's properties file (its authUsersFile)")
    where.add_argument("--users-file", help="the users file itself")
    parser.add_argument("user", help="the user name clients log in with")
    parser.add_argument("--delete", action="store_true", help="remove the user")
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    parser.set_defaults(func=cmd_passwd)
