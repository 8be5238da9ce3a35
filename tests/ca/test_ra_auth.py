"""API keys and JWTs of the RA API over real HTTPS (SwissSign RA manual 4.1-4.3).

A key is exchanged at POST /pki/api/v2/jwt for an HS256 JWT (iss, aud, sub, iat, exp = 8 h);
every other call needs it as Bearer. Refused tokens get 401 with a Bearer challenge.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from ca.store.audit import audit_records
from gateway.main import main
from tests.ca.ra_fixtures import ACCOUNT, OTHER, RaRunning, start_ra


@pytest.fixture(scope="module")
def ra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaRunning]:
    running = start_ra(tmp_path_factory.mktemp("ra-auth"))
    try:
        yield running
    finally:
        running.thread.stop()


def _secret(ra: RaRunning) -> bytes:
    return (ra.directory / "ra-jwt.key").read_bytes()


def _claims(ra: RaRunning, token: str) -> dict:
    return jwt.decode(token, _secret(ra), algorithms=["HS256"], audience="REST API")


def _mint(ra: RaRunning, token: str, **changes: object) -> str:
    """A token like ``token`` with ``changes`` to its claims, signed with the real secret."""
    header = jwt.get_unverified_header(token)
    claims = {**_claims(ra, token), **changes}
    return jwt.encode(claims, _secret(ra), algorithm="HS256", headers={"kid": header["kid"]})


def _refused(answer) -> None:  # type: ignore[no-untyped-def]
    assert answer.status_code == 401, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
    assert answer.json()["status"] == 401


def test_a_key_is_exchanged_for_a_jwt_with_the_manuals_claims(ra: RaRunning) -> None:
    key = ra.user("claims", {ACCOUNT: ["read"]})
    assert len(key) == 64 and key.isalnum()
    answer = ra.post("/jwt", json={"userName": "claims", "apiKey": key})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    claims = _claims(ra, answer.text)
    assert claims["iss"] == "cmcgate CA" and claims["aud"] == "REST API"
    assert claims["sub"] == "claims"
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert jwt.get_unverified_header(answer.text)["alg"] == "HS256"
    assert ra.get("/clients", answer.text).json()[0]["id"] == ACCOUNT


def test_a_wrong_key_or_unknown_user_gets_no_token(ra: RaRunning) -> None:
    key = ra.user("wrongkey", {ACCOUNT: ["read"]})
    wrong = key[:-1] + ("x" if key[-1] != "x" else "y")
    _refused(ra.post("/jwt", json={"userName": "wrongkey", "apiKey": wrong}))
    _refused(ra.post("/jwt", json={"userName": "nobody", "apiKey": key}))
    answer = ra.post("/jwt", json={"userName": "wrongkey"})
    assert answer.status_code == 400
    assert answer.headers["Content-Type"].startswith("application/problem+json")


def test_calls_without_a_bearer_token_are_refused(ra: RaRunning) -> None:
    _refused(ra.get("/orders"))
    _refused(ra.get("/orders", headers={"Authorization": "Basic dXNlcjpwdw=="}))
    _refused(ra.get("/orders", "not-a-jwt"))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(datetime.now(UTC).timestamp()) - 10},
        {"aud": "another API"},
        {"iss": "someone else"},
        {"nbf": int(datetime.now(UTC).timestamp()) + 3600},
    ],
    ids=["expired", "wrong-audience", "wrong-issuer", "not-yet-valid"],
)
def test_tokens_with_bad_claims_are_refused(ra: RaRunning, changes: dict) -> None:
    key = ra.user(f"claims-{next(iter(changes))}", {ACCOUNT: ["read"]})
    good = ra.jwt(f"claims-{next(iter(changes))}", key)
    assert ra.get("/orders", good).status_code == 200
    _refused(ra.get("/orders", _mint(ra, good, **changes)))


def test_alg_none_and_tampered_signatures_are_refused(ra: RaRunning) -> None:
    key = ra.user("tamper", {ACCOUNT: ["read"]})
    good = ra.jwt("tamper", key)
    header, payload, signature = good.split(".")
    none_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "none", "typ": "JWT", "kid": jwt.get_unverified_header(good)["kid"]})
        .encode()
    ).rstrip(b"=").decode()  # fmt: skip
    _refused(ra.get("/orders", f"{none_header}.{payload}."))
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    _refused(ra.get("/orders", f"{header}.{payload}.{flipped}"))
    other = jwt.encode(_claims(ra, good), b"x" * 32, algorithm="HS256",
                       headers={"kid": jwt.get_unverified_header(good)["kid"]})  # fmt: skip
    _refused(ra.get("/orders", other))


def test_a_rolled_key_works_six_days_and_is_refused_after_seven(ra: RaRunning) -> None:
    old_key = ra.user("roller", {ACCOUNT: ["read"]})
    new_key = ra.auth.roll_key("roller", by="test")
    ca = ra.service.ca
    real_clock = ca.clock
    try:
        ca.clock = lambda: real_clock() + timedelta(days=6)
        day6 = ra.jwt("roller", old_key)
        assert ra.get("/orders", day6).status_code == 200
        ca.clock = lambda: real_clock() + timedelta(days=7, minutes=1)
        _refused(ra.post("/jwt", json={"userName": "roller", "apiKey": old_key}))
        _refused(ra.get("/orders", day6))  # its JWTs die with the key
        assert ra.get("/orders", ra.jwt("roller", new_key)).status_code == 200
    finally:
        ca.clock = real_clock


def test_a_deleted_key_and_its_tokens_are_refused_at_once(ra: RaRunning) -> None:
    key = ra.user("deleted", {ACCOUNT: ["read"]})
    token = ra.jwt("deleted", key)
    assert ra.get("/orders", token).status_code == 200
    key_id = jwt.get_unverified_header(token)["kid"]
    ra.auth.delete_key("deleted", key_id, by="test")
    _refused(ra.get("/orders", token))
    _refused(ra.post("/jwt", json={"userName": "deleted", "apiKey": key}))


def test_keys_are_kept_hashed_and_the_jwt_secret_is_private(ra: RaRunning) -> None:
    key = ra.user("hashed", {ACCOUNT: ["read"]})
    ra.jwt("hashed", key)
    with sqlite3.connect(ra.directory / "ca.db") as db:
        stored = [row[0] for row in db.execute("SELECT key_hash FROM api_keys")]
        audit = " ".join(str(row) for row in db.execute("SELECT * FROM audit_log"))
    assert stored and all(len(h) == 64 for h in stored)
    assert key not in " ".join(stored) and key not in audit
    secret = ra.directory / "ra-jwt.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 32


def test_key_and_user_management_is_audited(ra: RaRunning) -> None:
    ra.user("audited", {OTHER: ["read", "issue"]})
    records = [r for r in audit_records(ra.service.ca.store) if r.event_type == "api_key"]
    mine = [r for r in records if r.subject == "audited"]
    assert [r.details["action"] for r in mine] == ["user added", "key created"]
    assert mine[0].details["grants"] == {OTHER: ["issue", "read"]}


def test_unknown_permissions_and_accounts_are_refused(ra: RaRunning) -> None:
    from ca.store.model import StoreError

    with pytest.raises(StoreError, match="unknown permission"):
        ra.auth.create_user("badperm", {ACCOUNT: ["read", "fly"]}, by="test")
    with pytest.raises(StoreError, match="no account"):
        ra.auth.create_user("badaccount", {"nope.ra": ["read"]}, by="test")
    assert "badperm" not in [u.name for u in ra.auth.list_users()]


def test_the_cli_adds_users_and_creates_rolls_and_deletes_keys(
    ra: RaRunning, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(ra.directory)
    assert main(["ca", "api-user", "add", "cli-user", "--grant", f"{ACCOUNT}:read,issue",
                 "--dir", directory]) == 0  # fmt: skip
    assert "grant example.ra: issue,read" in capsys.readouterr().out
    assert main(["ca", "api-key", "create", "cli-user", "--dir", directory]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert len(key) == 64 and "shown once" in captured.err
    assert ra.get("/clients", ra.jwt("cli-user", key)).status_code == 200
    assert main(["ca", "api-key", "roll", "cli-user", "--dir", directory]) == 0
    rolled = capsys.readouterr().out.strip()
    assert main(["ca", "api-user", "list", "--dir", directory]) == 0
    listing = capsys.readouterr().out
    assert "cli-user" in listing and "superseded" in listing and "active" in listing
    assert key not in listing and rolled not in listing
    key_id = jwt.get_unverified_header(ra.jwt("cli-user", rolled))["kid"]
    assert main(["ca", "api-key", "delete", "cli-user", key_id, "--dir", directory]) == 0
    _refused(ra.post("/jwt", json={"userName": "cli-user", "apiKey": rolled}))
    assert main(["ca", "api-user", "add", "cli-bad", "--grant", "nocolon", "--dir", directory]) == 2


def test_the_secret_file_is_made_once_and_reused(tmp_path: Path) -> None:
    from ca.ra.auth import load_secret

    path = tmp_path / "secret"
    first = load_secret(path)
    assert load_secret(path) == first and len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_reload_keeps_users_keys_and_tokens(ra: RaRunning) -> None:
    key = ra.user("reloaded", {ACCOUNT: ["read"]})
    token = ra.jwt("reloaded", key)
    before = ra.service.ra_services
    ra.service.reload()
    assert ra.service.ra_services is not before
    assert ra.get("/clients", token).status_code == 200
    assert ra.get("/clients", ra.jwt("reloaded", key)).status_code == 200


def test_the_first_calls_racing_for_the_secret_all_get_the_same_one(tmp_path: Path) -> None:
    """The file was created empty and filled afterwards: a racing reader got an empty file
    and the caller a 503 (hundreds of failures in 50 rounds of 8 threads)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from ca.ra.auth import load_secret

    for round_ in range(50):
        path = tmp_path / f"secret-{round_}"
        start = threading.Barrier(8)

        def load(path: Path = path, start: threading.Barrier = start) -> bytes:
            start.wait()
            return load_secret(path)

        with ThreadPoolExecutor(8) as pool:
            secrets = [f.result() for f in [pool.submit(load) for _ in range(8)]]
        assert len(set(secrets)) == 1 and len(secrets[0]) == 32
        assert secrets[0] == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"secret-{i}" for i in range(50))


def test_a_secret_others_can_read_is_refused(ra: RaRunning, tmp_path: Path) -> None:
    from ca.ra.auth import AuthSetupError, load_secret

    loose = tmp_path / "loose"
    loose.write_bytes(b"s" * 32)
    loose.chmod(0o644)
    with pytest.raises(AuthSetupError, match="chmod 600"):
        load_secret(loose)
    key = ra.user("loose-secret", {ACCOUNT: ["read"]})
    token = ra.jwt("loose-secret", key)
    secret = ra.directory / "ra-jwt.key"
    secret.chmod(0o644)
    try:
        answer = ra.get("/orders", token)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        assert str(secret) not in answer.text  # the reason is logged, the path not answered
        assert "try later" in answer.json()["detail"]
    finally:
        secret.chmod(0o600)
    assert ra.get("/orders", token).status_code == 200


def test_a_disabled_user_and_their_tokens_are_refused_at_once(
    ra: RaRunning, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store had a ``disabled`` flag that nothing could set: a user could only be stopped
    key by key."""
    key = ra.user("disabled", {ACCOUNT: ["read"]})
    token = ra.jwt("disabled", key)
    directory = str(ra.directory)
    assert main(["ca", "api-user", "disable", "disabled", "--dir", directory]) == 0
    assert "(disabled)" in capsys.readouterr().out
    _refused(ra.get("/orders", token))
    _refused(ra.post("/jwt", json={"userName": "disabled", "apiKey": key}))
    assert main(["ca", "api-user", "enable", "disabled", "--dir", directory]) == 0
    assert ra.get("/orders", token).status_code == 200
    assert ra.get("/orders", ra.jwt("disabled", key)).status_code == 200
    actions = [r.details.get("action") for r in audit_records(ra.service.ca.store)
               if r.event_type == "api_key" and r.subject == "disabled"]  # fmt: skip
    assert actions[-2:] == ["user disabled", "user enabled"]
