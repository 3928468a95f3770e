"""Tokens, scopes, disabled users and rate limits over HTTP, on SQLite and PostgreSQL (and Redis for shared limits)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from fastapi.testclient import TestClient

from api.app import create_app
from domain.user import Credential, TokenRevokedError, User
from services.access import token_id
from services.bootstrap import Container
from services.infrastructure.database import DatabaseURL
from services.infrastructure.rate_limits import LocalWindows, RedisWindows
from services.infrastructure.store import ZLH, store_env
from services.users import BOOTSTRAP_ADMIN_EMAIL, ensure_bootstrap_admin, hash_token
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import GAME, assert_problem, create, make_customer, wait_operation


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def new_token(client: TestClient, headers: dict[str, str], **body: object) -> dict:
    r = client.post("/api/tokens", json={"name": "ci", **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_tokens_are_listed_created_once_and_revoked_at_once(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    listed = client.get("/api/tokens", headers=alice).json()["items"]
    assert [(t["name"], t["scope"], t["expires_at"], t["current"]) for t in listed] == [
        ("first token", "full", None, True)]
    assert set(listed[0]) >= {"id", "name", "scope", "created_at", "expires_at", "last_used_at"}

    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = new_token(client, alice, name="deploy bot", scope="read", expires_at=expires.isoformat())
    assert set(made) == {"id", "name", "scope", "expires_at", "token"}
    assert made["scope"] == "read" and made["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M:%S"))
    reader = auth(made["token"])
    me = client.get("/api/me", headers=reader)  # the very next request: it works
    assert me.status_code == 200 and me.json()["scope"] == "read" and me.json()["email"] == "alice@example.com"

    listed = client.get("/api/tokens", headers=alice)
    assert made["token"] not in listed.text and token_of(alice) not in listed.text  # never the token itself
    assert hash_token(made["token"]) not in listed.text
    assert {t["name"] for t in listed.json()["items"]} == {"first token", "deploy bot"}

    r = client.delete(f"/api/tokens/{made['id']}", headers=alice)
    assert r.status_code == 204 and r.headers["ZLH-Read-Your-Writes"] == "caught-up"
    assert_problem(client.get("/api/me", headers=reader), 401, "unauthorized")  # the very next request
    assert_problem(client.delete(f"/api/tokens/{made['id']}", headers=alice), 404, "not_found")
    assert [t["name"] for t in client.get("/api/tokens", headers=alice).json()["items"]] == ["first token"]

    # Another user's token is not yours to see or revoke.
    bob = make_customer(client, "bob@example.com")
    bobs = new_token(client, bob)
    assert_problem(client.delete(f"/api/tokens/{bobs['id']}", headers=alice), 404, "not_found")
    assert_problem(client.delete("/api/tokens/00000000-0000-0000-0000-000000000000", headers=alice), 404, "not_found")
    assert client.get("/api/me", headers=auth(bobs["token"])).status_code == 200

    # Revoking the token you are using works too; it is the last thing it does.
    own = client.get("/api/tokens", headers=alice).json()["items"][0]["id"]
    assert client.delete(f"/api/tokens/{own}", headers=alice).status_code == 204
    assert_problem(client.get("/api/me", headers=alice), 401, "unauthorized")


def test_token_requests_are_checked(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    now = datetime.now(UTC)
    for body in ({"name": "x", "expires_at": (now - timedelta(minutes=1)).isoformat()},
                 {"name": "x", "expires_at": "2030-01-01T00:00:00"},  # no timezone
                 {"name": "x", "expires_at": "9999-12-31T23:59:59-14:00"},
                 {"name": "x", "expires_at": "not a date"},
                 {"name": "a\u0000b"}, {"name": "bell\u0007"}, {"name": "\ud800"}, {"name": ""}, {"name": "x" * 101},
                 {"name": "x", "scope": "admin"}, {"name": "x", "extra": 1}, {}):
        r = client.post("/api/tokens", content=json.dumps(body),  # ASCII JSON: a lone surrogate as \\ud800
                        headers={**alice, "Content-Type": "application/json"})
        assert_problem(r, 422, "validation_error")
    assert [t["name"] for t in client.get("/api/tokens", headers=alice).json()["items"]] == ["first token"]


def test_a_read_token_only_reads(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    accepted = create(client, alice, "k1").json()
    wait_operation(client, alice, accepted["operation_id"])
    reader = auth(new_token(client, alice, scope="read")["token"])
    instance = accepted["instance_id"]
    for path in ("/api/me", "/api/instances", f"/api/instances/{instance}", "/api/tokens", "/api/backups",
                 f"/api/instances/{instance}/backups", "/api/notes", "/api/support/tickets"):
        assert client.get(path, headers=reader).status_code == 200, path
    before = container.app.head()
    for method, path, kwargs in [
        ("post", "/api/instances", {"json": GAME, "headers": {"Idempotency-Key": "k2"}}),
        ("post", f"/api/instances/{instance}/power", {"json": {"action": "stop"}}),
        ("post", f"/api/instances/{instance}/console", {}),
        ("post", f"/api/instances/{instance}/backups", {}),
        ("delete", f"/api/instances/{instance}", {}),
        ("put", f"/api/instances/{instance}/files/content?path=/a.txt", {"content": b"x"}),
        ("post", "/api/tokens", {"json": {"name": "escalate"}}),
        ("post", "/api/support/create", {"json": {"subject": "s", "message": "m", "instance_id": None}}),
        ("put", "/api/notes", {"json": {"content": "x"}, "headers": {"If-Match": "0"}}),
    ]:
        headers = {**reader, **kwargs.pop("headers", {})}
        r = getattr(client, method)(path, headers=headers, **kwargs)
        assert_problem(r, 403, "insufficient_scope")
    assert container.app.head() == before  # nothing was written
    admin_reader = auth(new_token(client, auth(ADMIN_TOKEN), scope="read")["token"])
    assert client.get("/api/admin/users", headers=admin_reader).status_code == 200
    assert_problem(client.post("/api/admin/users", json={"email": "c@example.com"}, headers=admin_reader),
                   403, "insufficient_scope")


def test_expiry_takes_effect_at_once_even_from_the_cache(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    made = new_token(client, alice, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert client.get("/api/me", headers=auth(made["token"])).status_code == 200
    authenticator = container.access.authenticator
    assert authenticator.cached(token_id(made["token"])) is not None
    authenticator.wall = lambda: datetime.now(UTC) + timedelta(hours=1, seconds=1)
    assert_problem(client.get("/api/me", headers=auth(made["token"])), 401, "unauthorized")
    assert client.get("/api/me", headers=alice).status_code == 200  # no expiry: still fine
    listed = {t["name"]: t for t in client.get("/api/tokens", headers=alice).json()["items"]}
    assert listed["ci"]["expires_at"] is not None


def test_last_use_is_recorded_without_an_event(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    head = container.app.head()
    assert client.get("/api/instances", headers=alice).status_code == 200
    used = poll(lambda: client.get("/api/tokens", headers=alice).json()["items"][0]["last_used_at"],
                lambda at: at is not None)
    assert datetime.strptime(used, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) <= datetime.now(UTC)
    for _ in range(5):
        assert client.get("/api/instances", headers=alice).status_code == 200
    container.access.usage.flush()
    assert client.get("/api/tokens", headers=alice).json()["items"][0]["last_used_at"] == used  # once a minute
    assert container.app.head() == head  # requests append nothing to the log


def test_operators_disable_and_enable_users(client: TestClient, container: Container) -> None:
    admin = auth(ADMIN_TOKEN)
    alice = make_customer(client, "alice@example.com")
    second = auth(new_token(client, alice)["token"])
    accepted = create(client, alice, "k1").json()
    wait_operation(client, alice, accepted["operation_id"])
    poll(lambda: client.get(f"/api/instances/{accepted['instance_id']}", headers=alice).json()["status"],
         lambda s: s == "running")
    alice_id = client.get("/api/me", headers=alice).json()["id"]
    for headers in (alice, second):
        assert client.get("/api/me", headers=headers).status_code == 200  # cached now

    r = client.post(f"/api/admin/users/{alice_id}/disable", headers=admin)
    assert r.status_code == 200 and r.json() == {"id": alice_id, "email": "alice@example.com", "admin": False,
                                                 "disabled": True}
    for headers in (alice, second):
        assert_problem(client.get("/api/me", headers=headers), 401, "unauthorized")
    instance = client.get(f"/api/instances/{accepted['instance_id']}", headers=admin).json()
    assert instance["status"] == "running" and instance["pending_operation_id"] is None  # nothing else changed
    listed = {u["email"]: u for u in client.get("/api/admin/users", headers=admin).json()["items"]}
    assert listed["alice@example.com"]["disabled"] is True and listed[BOOTSTRAP_ADMIN_EMAIL]["disabled"] is False
    assert client.post(f"/api/admin/users/{alice_id}/disable", headers=admin).status_code == 200  # idempotent

    assert client.post(f"/api/admin/users/{alice_id}/enable", headers=admin).json()["disabled"] is False
    for headers in (alice, second):
        assert client.get("/api/me", headers=headers).status_code == 200

    admin_id = client.get("/api/me", headers=admin).json()["id"]
    assert_problem(client.post(f"/api/admin/users/{admin_id}/disable", headers=admin), 409, "cannot_disable_self")
    assert_problem(client.post(f"/api/admin/users/{alice_id}/disable", headers=alice), 403, "forbidden")
    assert_problem(client.post("/api/admin/users/00000000-0000-0000-0000-000000000000/disable", headers=admin),
                   404, "not_found")


def test_tokens_from_an_old_log_still_authenticate(client: TestClient, container: Container) -> None:
    """A log written before tokens had names, scopes and expiry: `User.TokenIssued` and `Credential.Issued`
    version 1, stored as the old code stored them. Such a token authenticates as a full token."""
    user = User(email="old@example.com", admin=False)
    user._token_issued(token_hash=hash_token("old-token"))
    credential = Credential(token_hash=hash_token("old-token"), user_id=user.id, name="", scope="", expires_at=None)
    stored = [container.app.mapper.to_stored_event(e) for e in (*user.collect_events(), *credential.collect_events())]
    legacy = []
    for event in stored:
        state = json.loads(event.state)
        if event.topic == Credential.Issued.TOPIC:
            for field in ("name", "scope", "expires_at", "class_version"):
                del state[field]
        legacy.append(StoredEvent(event.originator_id, event.originator_version, event.topic,
                                  json.dumps(state).encode()))
    container.app.recorder.insert_events(legacy)
    old = auth("old-token")
    me = client.get("/api/me", headers=old).json()  # at once: from the store if the read model is behind
    assert (me["email"], me["scope"]) == ("old@example.com", "full")
    listed = poll(lambda: client.get("/api/tokens", headers=old).json()["items"], lambda items: len(items) == 1)
    assert (listed[0]["name"], listed[0]["scope"], listed[0]["expires_at"]) == ("API token", "full", None)
    assert client.post("/api/support/create", json={"subject": "s", "message": "m", "instance_id": None},
                       headers=old).status_code == 201  # full scope
    assert client.delete(f"/api/tokens/{listed[0]['id']}", headers=old).status_code == 204
    assert client.get("/api/me", headers=old).status_code == 401


@pytest.fixture
def two_apis(make_container: Callable[..., Container]) -> Iterator[tuple[TestClient, TestClient, Container]]:
    """Two API processes on one database: `a` runs the workers, `b` only serves (as `zlh serve --no-workers`)."""
    a = make_container()
    b = make_container(workers=())
    b.access.authenticator.ttl = 3600.0  # only an invalidation can make `b` forget a token now
    with TestClient(create_app(a)) as client_a, TestClient(create_app(b)) as client_b:
        yield client_a, client_b, b


@pytest.mark.real_services  # two processes share a database; in memory, each store is its own
def test_revocation_and_disable_reach_every_api_process(two_apis: tuple[TestClient, TestClient, Container]) -> None:
    client_a, client_b, b = two_apis
    alice = make_customer(client_a, "alice@example.com")
    made = new_token(client_a, alice)
    assert client_b.get("/api/me", headers=auth(made["token"])).status_code == 200
    assert b.access.authenticator.cached(token_id(made["token"])) is not None
    assert client_a.delete(f"/api/tokens/{made['id']}", headers=alice).status_code == 204
    poll(lambda: client_b.get("/api/me", headers=auth(made["token"])).status_code, lambda s: s == 401)

    assert client_b.get("/api/me", headers=alice).status_code == 200
    alice_id = client_a.get("/api/me", headers=alice).json()["id"]
    assert client_a.post(f"/api/admin/users/{alice_id}/disable", headers=auth(ADMIN_TOKEN)).status_code == 200
    poll(lambda: client_b.get("/api/me", headers=alice).status_code, lambda s: s == 401)
    assert client_a.post(f"/api/admin/users/{alice_id}/enable", headers=auth(ADMIN_TOKEN)).status_code == 200
    poll(lambda: client_b.get("/api/me", headers=alice).status_code, lambda s: s == 200)


def test_concurrent_revocation_leaves_one_revocation(client: TestClient, container: Container) -> None:
    alice = make_customer(client, "alice@example.com")
    made = new_token(client, alice)
    statuses: list[int] = []

    def revoke() -> None:
        statuses.append(client.delete(f"/api/tokens/{made['id']}", headers=alice).status_code)

    threads = [threading.Thread(target=revoke) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [204] + [404] * 7
    events = [type(e).__name__ for e in container.app.stream(UUID(made["id"]))]
    assert events == ["Issued", "Revoked"]
    assert client.get("/api/me", headers=auth(made["token"])).status_code == 401


@pytest.mark.real_services  # several stores on one database
def test_rotating_the_bootstrap_token_revokes_the_previous_one(database_url: str, client: TestClient) -> None:
    """Many processes (here: stores with their own connections) starting at once with the same new token."""
    assert client.get("/api/me", headers=auth(ADMIN_TOKEN)).status_code == 200
    url = DatabaseURL.parse(database_url)
    apps = [ZLH(env=store_env(url, pool_size=2)) for _ in range(6)]
    results: list[object] = []
    try:
        threads = [threading.Thread(target=lambda a=a: results.append(ensure_bootstrap_admin(a, "rotated")))
                   for a in apps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 6 and sum(bool(r.revoked) for r in results) == 1  # type: ignore[attr-defined]
        admin = apps[0].find(User.create_id(BOOTSTRAP_ADMIN_EMAIL), User)
        assert admin is not None
        sets = [e for e in apps[0].stream(admin.id) if type(e).__name__ == "BootstrapTokenSet"]
        assert len(sets) == 2  # the first start's token, then "rotated": once, however many processes started
    finally:
        for a in apps:
            a.close()
    # Made by other processes: this one forgets its cached copy as its log follower sees the revocation.
    poll(lambda: client.get("/api/me", headers=auth(ADMIN_TOKEN)).status_code, lambda s: s == 401)
    assert client.get("/api/me", headers=auth("rotated")).json()["admin"] is True
    app = ZLH(env=store_env(url, pool_size=1))
    try:
        with pytest.raises(TokenRevokedError):  # a revoked token never comes back, not even as the bootstrap one
            ensure_bootstrap_admin(app, ADMIN_TOKEN)
        assert ensure_bootstrap_admin(app, "rotated").revoked == []  # the same value again: nothing to do
    finally:
        app.close()


# Rate limits.

def test_rate_limit_per_token(make_container: Callable[..., Container]) -> None:
    container = make_container(rate_limit_per_minute=5)
    clock = FakeClock()
    container.access.windows = LocalWindows(clock=clock)
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        bob = make_customer(client, "bob@example.com")
        for n in range(5):
            r = client.get("/api/me", headers=alice)
            assert r.status_code == 200
            assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("5", str(4 - n))
        r = client.get("/api/me", headers=alice)
        assert_problem(r, 429, "rate_limited")
        assert r.headers["RateLimit-Remaining"] == "0" and 1 <= int(r.headers["Retry-After"]) <= 60
        assert_problem(client.post("/api/tokens", json={"name": "x"}, headers=alice), 429, "rate_limited")
        assert client.get("/api/me", headers=bob).status_code == 200  # per token
        clock.now += 60
        assert client.get("/api/me", headers=alice).status_code == 200  # a new window


def test_failed_authentications_per_address(make_container: Callable[..., Container]) -> None:
    container = make_container(auth_failures_per_minute=3)
    clock = FakeClock()
    container.access.windows = LocalWindows(clock=clock)
    with TestClient(create_app(container)) as client, \
            TestClient(create_app(container), client=("198.51.100.7", 4000)) as elsewhere:
        alice = make_customer(client, "alice@example.com")
        for n in range(3):
            r = client.get("/api/me", headers=auth(f"guess-{n}"))
            assert_problem(r, 401, "unauthorized")
            assert r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Remaining"] == str(2 - n)
        for _ in range(3):
            assert_problem(client.get("/api/me"), 401, "unauthorized")  # no token: not a guess, not counted
        for headers in (auth("guess-4"), alice):  # refused before the token is looked at: valid or not
            r = client.get("/api/me", headers=headers)
            assert_problem(r, 429, "rate_limited")
            assert int(r.headers["Retry-After"]) >= 1
        assert elsewhere.get("/api/me", headers=alice).status_code == 200  # per address
        clock.now += 61
        assert client.get("/api/me", headers=alice).status_code == 200


def test_limits_are_shared_through_redis(make_container: Callable[..., Container], redis_test_url: str) -> None:
    a = make_container(redis_url=redis_test_url, rate_limit_per_minute=6)
    b = make_container(workers=(), redis_url=redis_test_url, rate_limit_per_minute=6)
    prefix = f"test-{uuid4().hex}:"  # this test's own keys in a Redis other tests share
    a.access.windows = RedisWindows(redis_test_url, prefix=prefix)
    b.access.windows = RedisWindows(redis_test_url, prefix=prefix)
    with TestClient(create_app(a)) as client_a, TestClient(create_app(b)) as client_b:
        alice = make_customer(client_a, "alice@example.com")
        statuses = [c.get("/api/me", headers=alice).status_code for c in (client_a, client_b) * 4]
        assert statuses == [200] * 6 + [429] * 2
        remaining = client_b.get("/api/tokens", headers=alice).headers.get("RateLimit-Remaining")
        assert remaining == "0"


def test_redis_down_fails_open(make_container: Callable[..., Container], caplog: pytest.LogCaptureFixture) -> None:
    container = make_container(redis_url="redis://127.0.0.1:1/0", rate_limit_per_minute=3)
    with TestClient(create_app(container)) as client, caplog.at_level(logging.WARNING):
        alice = make_customer(client, "alice@example.com")
        assert [client.get("/api/me", headers=alice).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert any("Redis did not answer" in r.getMessage() for r in caplog.records)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
