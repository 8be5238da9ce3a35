"""API users, API keys and JWTs of the RA API (SwissSign RA manual 4.1-4.3).

The manual's flow: a SERVICE user holds an API key (64 characters) and sends a JWT as
``Authorization: Bearer`` on every call; the JWT carries ``iss``, ``aud``, ``sub`` (the user),
``iat`` and ``exp`` (at most 8 hours). The manual lets the client sign that JWT with its key;
here keys are only kept hashed (a database leak must not hand out keys), so the RA cannot
verify such a signature. Instead ``POST /pki/api/v2/jwt`` exchanges the key for a JWT the RA
signs (HS256, secret in ``ra.jwt.secret_file``), with the key's id as ``kid``: every call checks
that this key is still valid, so a rolled-over key's JWTs die with the key after the rollover
period and a deleted key's at once.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from ca.store.apikeys import ApiKeyView, ApiUserView, UnknownApiUser, key_hash
from config.errors import CmcgateError

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority

KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64
ALGORITHM = "HS256"
_REQUIRED = ["iss", "aud", "sub", "iat", "nbf", "exp", "jti"]


class AuthError(CmcgateError):
    """Missing, malformed, expired or revoked credentials (401 with a Bearer challenge)."""

    status = 401

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        super().__init__(message)
        self.error = error

    @property
    def challenge(self) -> str:
        return f'Bearer realm="cmcgate RA", error="{self.error}"'


class Forbidden(CmcgateError):
    """The user is known but lacks the permission on this account (403)."""

    status = 403


class AuthSetupError(CmcgateError):
    """The JWT secret file cannot be read or made (503: the RA cannot authenticate now)."""

    status = 503


@dataclass(frozen=True)
class Principal:
    """Who calls: the API user, their permissions per account, the key their JWT came from."""

    user: str
    grants: Mapping[str, frozenset[str]]
    key_id: str

    def allows(self, permission: str, account: str) -> bool:
        return permission in self.grants.get(account, frozenset())

    def sees(self, account: str) -> bool:
        """Holds any grant on ``account`` (others' accounts are answered 404, not 403)."""
        return account in self.grants

    def accounts(self, permission: str = "read") -> list[str]:
        return sorted(a for a, perms in self.grants.items() if permission in perms)


def new_api_key() -> str:
    """64 characters from [0-9A-Za-z] (log2(62) * 64 = 381 bits)."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


class RaAuth:
    """Users, keys and tokens, built from the authority (store, settings, clock)."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.settings = ca.settings.ra

    # -- users and keys -----------------------------------------------------------------------
    def create_user(
        self, name: str, grants: Mapping[str, Iterable[str]], *, by: str
    ) -> ApiUserView:
        for account in grants:
            if self.ca.settings.account(account) is None:
                raise UnknownApiUser(f"no account {account!r} in ca.yaml")
        return self.ca.store.add_api_user(name, grants, by=by, now=self.ca.clock())

    def grant(self, name: str, account: str, permissions: Iterable[str], *, by: str) -> ApiUserView:
        if self.ca.settings.account(account) is None:
            raise UnknownApiUser(f"no account {account!r} in ca.yaml")
        return self.ca.store.set_api_grant(name, account, permissions, by=by, now=self.ca.clock())

    def revoke_grant(self, name: str, account: str, *, by: str) -> ApiUserView:
        return self.ca.store.set_api_grant(name, account, (), by=by, now=self.ca.clock())

    def disable_user(self, name: str, *, by: str) -> ApiUserView:
        """No new JWT; the user's JWTs are refused from the next call on."""
        return self.ca.store.set_api_user_disabled(name, True, by=by, now=self.ca.clock())

    def enable_user(self, name: str, *, by: str) -> ApiUserView:
        return self.ca.store.set_api_user_disabled(name, False, by=by, now=self.ca.clock())

    def create_key(self, name: str, *, by: str) -> str:
        """A new key (returned once, stored hashed) next to the user's current keys."""
        return self.issue_key(name, roll=False, by=by)[0]

    def roll_key(self, name: str, *, by: str) -> str:
        """A new key; the previous ones stay valid ``ra.api_key_rollover_days`` more days."""
        return self.issue_key(name, roll=True, by=by)[0]

    def issue_key(self, name: str, *, roll: bool, by: str) -> tuple[str, ApiKeyView]:
        """The new key and its record (id, times): :meth:`create_key` or :meth:`roll_key`."""
        key = new_api_key()
        view = self.ca.store.add_api_key(name, key_hash(key), roll=roll, by=by, now=self.ca.clock())
        return key, view

    def delete_key(self, name: str, key_id: str, *, by: str) -> ApiKeyView:
        """Refused from now on, and so are the JWTs it was exchanged for."""
        return self.ca.store.delete_api_key(name, key_id, by=by, now=self.ca.clock())

    def list_users(self) -> list[ApiUserView]:
        return self.ca.store.api_users()

    def key_usable(self, key: ApiKeyView, now: datetime) -> bool:
        if key.deleted_at is not None:
            return False
        if key.superseded_at is None:
            return True
        return now < key.superseded_at + timedelta(days=self.settings.api_key_rollover_days)

    # -- tokens -------------------------------------------------------------------------------
    def exchange(self, name: str, key: str) -> str:
        """The JWT for a valid (user, key) pair; AuthError (401) otherwise, the same for an
        unknown user and a wrong key."""
        if not isinstance(name, str) or not isinstance(key, str) or not name or not key:
            raise AuthError("userName and apiKey are required", error="invalid_request")
        now = self.ca.clock()
        try:
            user = self.ca.store.get_api_user(name[:128])
        except UnknownApiUser:
            user = None
        wanted = key_hash(key[:256])
        match: ApiKeyView | None = None
        for candidate in user.keys if user is not None else ():
            # every stored key is compared, in constant time, whatever the earlier ones gave
            if hmac.compare_digest(candidate.key_hash, wanted) and self.key_usable(candidate, now):
                match = candidate
        if user is None or user.disabled or match is None:
            raise AuthError("unknown API user or invalid API key", error="invalid_client")
        iat = int(now.timestamp())
        claims = {
            "iss": self.settings.jwt.issuer,
            "aud": self.settings.jwt.audience,
            "sub": user.name,
            "iat": iat,
            "nbf": iat,
            "exp": iat + self.settings.jwt.lifetime_hours * 3600,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret(), algorithm=ALGORITHM, headers={"kid": match.id})

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request from its ``Authorization`` header (Bearer JWT only)."""
        if not authorization:
            raise AuthError("send Authorization: Bearer <JWT> (POST /pki/api/v2/jwt)",
                            error="invalid_request")  # fmt: skip
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("only Bearer tokens are accepted", error="invalid_request")
        claims, kid = self._verified(token.strip())
        key = self.ca.store.get_api_key(kid)
        now = self.ca.clock()
        if key is None or key.user != claims["sub"] or not self.key_usable(key, now):
            raise AuthError("the API key this token was issued for is no longer valid")
        try:
            user = self.ca.store.get_api_user(claims["sub"])
        except UnknownApiUser:
            raise AuthError("unknown API user") from None
        if user.disabled:
            raise AuthError("this API user is disabled")
        return Principal(user.name, user.permissions(), key.id)

    def _verified(self, token: str) -> tuple[dict[str, Any], str]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
                raise AuthError("the token must be HS256 and name its key (kid)")
            # time claims are checked below against the CA's clock (testable, one time source)
            claims: dict[str, Any] = jwt.decode(
                token, self.secret(), algorithms=[ALGORITHM],
                audience=self.settings.jwt.audience, issuer=self.settings.jwt.issuer,
                options={"require": _REQUIRED, "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        now = self.ca.clock().timestamp()
        for name in ("iat", "nbf", "exp"):
            if not isinstance(claims.get(name), int | float) or isinstance(claims[name], bool):
                raise AuthError(f"invalid token: {name} is not a number")
        if claims["exp"] <= now:
            raise AuthError("the token has expired")
        if claims["nbf"] > now + 60 or claims["iat"] > now + 60:
            raise AuthError("the token is not valid yet")
        if not isinstance(claims["sub"], str):
            raise AuthError("invalid token: sub is not a user name")
        return claims, str(header["kid"])

    def secret(self) -> bytes:
        """The HS256 secret: 32 random bytes in ``ra.jwt.secret_file``, made 0600 when missing."""
        return load_secret(self.settings.jwt.secret_file)


def load_secret(path: Path) -> bytes:
    """The secret in ``path``, made when missing.

    Made atomically: the 32 bytes go to a private temporary file that is then hard-linked
    to ``path`` (which fails if another process or thread won the race: theirs is used), so
    nobody ever reads a created but still empty file (that answered 503 to the calls racing
    the first one). Like the CA's PIN and passphrase files (:func:`ca.keys.base.read_secret`)
    a secret readable by group or others is refused: whoever reads it can mint any user's JWT.
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        return _make_secret(path)
    except OSError as exc:
        raise AuthSetupError(f"{path}: cannot read the JWT secret: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthSetupError(f"{path}: the JWT secret is readable by group or others "
                             f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")  # fmt: skip
    if len(data) < 32:
        raise AuthSetupError(f"{path}: the JWT secret must be at least 32 bytes")
    return data


def _make_secret(path: Path) -> bytes:
    data = secrets.token_bytes(32)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process or thread made it first: use theirs
            return load_secret(path)
    except OSError as exc:
        raise AuthSetupError(f"{path}: cannot create the JWT secret: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return data
