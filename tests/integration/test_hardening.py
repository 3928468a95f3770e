"""Nothing one customer sends can stall, crash or starve the service (issue 12), on SQLite and PostgreSQL.

One test per hardening item (validation, ids, body limits, browser headers), then the issue's
"done when": every bad input of the issue at once, after which every read model has caught up and
every write is answered with its read models caught up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.consistency import HEADER as RYW
from api.security import SECURITY_HEADERS
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.ports import DriverError
from tests import asgi
from tests.billing_fixtures import SECRET, invoice_event, signed_headers
from tests.integration.conftest import ADMIN_TOKEN, auth, poll
from tests.integration.test_api import assert_problem, create, make_customer, wait_operation
from tests.integration.test_lifecycle import running_instance

MiB = 1024 * 1024
FAR_FUTURE = "9999-12-31T23:59:59-14:00"  # year 10000 in UTC
LONG_NAME = "n" * 256


@pytest.fixture
def app_and_client(make_container: Callable[..., Container]) -> Iterator[tuple[Any, TestClient, Container]]:
    container = make_container(workers=("projections", "provisioning"), stripe_webhook_secret=SECRET)
    app = create_app(container)
    with TestClient(app) as client:
        yield app, client, container


@pytest.fixture
def hclient(app_and_client: tuple[Any, TestClient, Container]) -> TestClient:
    return app_and_client[1]


def raw_json(client: TestClient, method: str, url: str, text: str, headers: dict[str, str]) -> Any:
    """Send `text` as the JSON body byte for byte (so `\\ud800` escapes reach the server as written)."""
    return client.request(method, url, content=text.encode(), headers={**headers, "Content-Type": "application/json"})


def stripe_post(client: TestClient, event: dict[str, Any]) -> Any:
    payload = json.dumps(event, separators=(",", ":")).encode()
    return client.post("/api/billing/stripe/webhook", content=payload, headers=signed_headers(payload))


def assert_names(response: Any, field: str) -> None:
    assert_problem(response, 422, "validation_error")
    assert response.json()["detail"].startswith(f"{field}:"), response.json()


# -- item 3: validation at the boundary, and again in the domain ----------------------------------


def test_free_text_with_control_characters_or_lone_surrogates_is_422(hclient: TestClient, admin: dict) -> None:
    client, alice = hclient, make_customer(hclient, "alice@example.com")
    assert_names(client.post("/api/support/create", json={"subject": "a\u0000b", "message": "hi"}, headers=alice),
                 "subject")
    assert_names(client.post("/api/support/create", json={"subject": "ok", "message": "esc \u001b[2J"},
                             headers=alice), "message")
    assert_names(raw_json(client, "POST", "/api/support/create", '{"subject": "\\udc00", "message": "x"}', alice),
                 "subject")
    ticket = client.post("/api/support/create", json={"subject": "tab\there", "message": "line\r\nnext\n"},
                         headers=alice)
    assert ticket.status_code == 201, ticket.text  # tab, LF and CR are text
    tid = ticket.json()["id"]
    assert_names(client.post(f"/api/support/tickets/{tid}/reply", json={"message": "c1 \u0085"}, headers=alice),
                 "message")
    assert_names(client.post(f"/api/admin/support/tickets/{tid}/reply", json={"message": "del \u007f"},
                             headers=admin), "message")
    assert_names(raw_json(client, "PUT", "/api/notes", '{"content": "\\ud800"}', {**alice, "If-Match": "0"}),
                 "content")
    assert_names(client.put("/api/notes", json={"content": "bell \u0007"}, headers={**alice, "If-Match": "0"}),
                 "content")
    announcement = {"level": "info", "title": "t\u0000", "body": "b"}
    assert_names(client.post("/api/admin/announcements", json=announcement, headers=admin), "title")
    assert_names(client.post("/api/admin/announcements", json={**announcement, "title": "t", "body": "\u0000"},
                             headers=admin), "body")
    assert_names(client.post("/api/admin/users", json={"email": "a\u0000@example.com"}, headers=admin), "email")
    # Emoji are text: surrogate pairs in JSON escapes are one character, not two lone halves.
    saved = raw_json(client, "PUT", "/api/notes", '{"content": "ok \\ud83d\\ude00"}', {**alice, "If-Match": "0"})
    assert saved.status_code == 200 and saved.json()["content"] == "ok \U0001F600"
    assert client.get("/api/support/tickets", headers=alice).json()["items"][0]["subject"] == "tab\there"


def test_the_domain_refuses_what_the_api_refuses(container: Container) -> None:
    """The CLI and the workers reach the commands without the API: the same rules hold there."""
    from datetime import UTC, datetime, timedelta, timezone

    from domain.text import TextValidationError
    from services import announcements, notes, support
    from services.users import Principal, create_user

    alice = create_user(container.app, "alice@example.com", False).principal
    with pytest.raises(TextValidationError, match=r"^email:"):
        create_user(container.app, "bad\u0000@example.com", False)
    with pytest.raises(TextValidationError, match=r"^subject:"):
        support.open_ticket(container.app, alice, "a\u0000b", "m", None)
    ticket, _ = support.open_ticket(container.app, alice, "fine", "fine", None)
    with pytest.raises(TextValidationError, match=r"^message:"):
        support.reply(container.app, Principal(alice.id, alice.email, False), ticket.id, "\ud800")
    with pytest.raises(TextValidationError, match=r"^content:"):
        notes.save_note(container.app, alice.id, "\u0000", 0)
    with pytest.raises(TextValidationError, match=r"^ends_at:"):
        announcements.publish(container.app, "info", "t", "b",
                              ends_at=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=14))))
    with pytest.raises(TextValidationError, match=r"^starts_at:"):
        announcements.publish(container.app, "info", "t", "b", starts_at=datetime(2030, 1, 1))  # no timezone
    with pytest.raises(TextValidationError, match=r"^title:"):
        announcements.publish(container.app, "info", "\u0085", "b", starts_at=datetime(2030, 1, 1, tzinfo=UTC))


def test_timestamps_only_within_what_every_read_model_holds(hclient: TestClient, admin: dict) -> None:
    client = hclient
    base = {"level": "info", "title": "maintenance", "body": "tonight"}
    for field, value in (("ends_at", FAR_FUTURE), ("starts_at", "1969-12-31T23:59:59Z"),
                         ("ends_at", "2030-01-01T00:00:00"), ("ends_at", "10000-01-01T00:00:00Z")):
        r = client.post("/api/admin/announcements", json={**base, field: value}, headers=admin)
        assert_problem(r, 422, "validation_error")
        assert field in r.json()["detail"], r.json()
    edge = client.post("/api/admin/announcements", json={**base, "starts_at": "1970-01-01T00:00:00Z",
                                                         "ends_at": "9999-12-30T23:59:59Z"}, headers=admin)
    assert edge.status_code == 201, edge.text
    assert edge.json()["ends_at"].startswith("9999-12-30T23:59:59")
    listed = client.get("/api/announcements", headers=admin).json()["items"]
    assert [a["title"] for a in listed] == ["maintenance"]


def test_if_match_is_parsed_strictly(hclient: TestClient) -> None:
    client, alice = hclient, make_customer(hclient, "alice@example.com")
    for value in ("²", "¹²", "1" * 5000, "1" * 19, "abc", "-1", "1.0", " ", '""', "W/", '"1', "1 2"):
        # Header bytes are Latin-1 on the server: b"\xb2" arrives as "²", which str.isdigit() accepts.
        headers = [*alice.items(), ("Content-Type", "application/json"), ("If-Match", value.encode("latin-1"))]
        assert_problem(client.put("/api/notes", content=b'{"content": "x"}', headers=headers), 400, "bad_if_match")
    assert client.put("/api/notes", json={"content": "v1"}, headers={**alice, "If-Match": "0"}).status_code == 200
    assert client.put("/api/notes", json={"content": "v2"}, headers={**alice, "If-Match": '"1"'}).status_code == 200
    assert client.put("/api/notes", json={"content": "v3"}, headers={**alice, "If-Match": 'W/"2"'}).status_code == 200
    assert_problem(client.put("/api/notes", json={"content": "stale"}, headers={**alice, "If-Match": "2"}),
                   412, "version_conflict")


def test_paths_too_long_are_bad_path_before_the_node_is_asked(hclient: TestClient, driver: FakeDriver) -> None:
    client, alice = hclient, make_customer(hclient, "alice@example.com")
    iid = running_instance(client, alice)
    files, content = f"/api/instances/{iid}/files", f"/api/instances/{iid}/files/content"
    before = list(driver.calls)
    for path in (f"/{LONG_NAME}", f"/dir/{'é' * 128}", "/" + "a/" * 2048 + "b"):
        assert_problem(client.get(files, params={"path": path}, headers=alice), 400, "bad_path")
        assert_problem(client.get(content, params={"path": path}, headers=alice), 400, "bad_path")
        assert_problem(client.put(content, params={"path": path}, content=b"x", headers=alice), 400, "bad_path")
    assert driver.calls == before  # refused by the control plane: the node never saw them
    ok = f"/{'n' * 255}"
    assert client.put(content, params={"path": ok}, content=b"fits", headers=alice).status_code == 204
    assert client.get(content, params={"path": ok}, headers=alice).content == b"fits"


@pytest.mark.parametrize(("code", "status", "answer"), [
    ("agent_unreachable", 503, "node_unavailable"), ("agent_unauthorized", 503, "node_unavailable"),
    ("io_error", 503, "node_unavailable"), ("agent_internal", 503, "node_unavailable"),
    ("something_new", 503, "node_unavailable"), ("agent_timeout", 504, "node_timeout"),
    ("bad_path", 400, "bad_path"), ("not_found", 404, "not_found"), ("quota_exceeded", 409, "quota_exceeded"),
])
def test_every_driver_failure_is_a_problem_with_a_stable_code(hclient: TestClient, driver: FakeDriver, code: str,
                                                              status: int, answer: str) -> None:
    client, alice = hclient, make_customer(hclient, "alice@example.com")
    iid = running_instance(client, alice)
    driver.fail_on["list_files"] = DriverError(code, "agent at http://10.1.2.3:8100 said no")
    r = client.get(f"/api/instances/{iid}/files", headers=alice)
    assert_problem(r, status, answer)
    if status >= 500:
        assert r.headers["Retry-After"].isdigit()
        assert "10.1.2.3" not in r.text and "8100" not in r.text


def test_a_signed_stripe_event_with_an_absurd_created_is_400(hclient: TestClient) -> None:
    event = invoice_event("evt_absurd", "payment_failed", "in_1", "cus_x", 0)
    for created in (1e20, 10**20, -1, 1.5, True, "1700000000", None):
        r = stripe_post(hclient, {**event, "created": created})
        assert_problem(r, 400, "bad_payload")
    for bad in ({"id": "evt_\u0000"}, {"type": "invoice.paid\u0000"}, {"id": "e" * 256},
                {"data": {"object": {"id": "in_\ud800", "customer": "cus_x"}}},
                {"data": {"object": {"id": "in_1", "customer": {"id": "cus_\u0007"}}}}):
        assert_problem(stripe_post(hclient, {**event, "created": 1_700_000_000, **bad}), 400, "bad_payload")
    # Odd shapes that carry nothing for billing are recorded, not a 500.
    for n, odd in enumerate(({"data": []}, {"data": {"object": []}}, {"data": None})):
        r = stripe_post(hclient, {**event, "id": f"evt_odd_{n}", "created": 1_700_000_000, **odd})
        assert r.json() == {"received": True, "duplicate": False}, r.text
    assert stripe_post(hclient, {**event, "created": 1_700_000_000}).json() == {"received": True,
                                                                                "duplicate": False}


# -- item 4: ids -------------------------------------------------------------------------------------


def ids_of_every_kind(client: TestClient, alice: dict, admin: dict) -> dict[str, str]:
    iid = running_instance(client, alice)
    backup = client.post(f"/api/instances/{iid}/backups", headers=alice).json()
    assert wait_operation(client, alice, backup["operation_id"])["phase"] == "succeeded"
    ticket = client.post("/api/support/create", json={"subject": "s", "message": "m"}, headers=alice).json()
    me = client.get("/api/me", headers=alice).json()
    announcement = client.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b"},
                               headers=admin).json()
    return {"instance": iid, "operation": backup["operation_id"], "backup": backup["backup_id"],
            "ticket": ticket["id"], "user": me["id"], "announcement": announcement["id"],
            "unknown": "00000000-0000-0000-0000-000000000000"}


def routes_taking(ids: dict[str, str], kind: str, other: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that takes an id of `kind`, called with `other` in its place."""
    i, b = ids["instance"], ids["backup"]
    if kind == "instance":
        base = f"/api/instances/{other}"
        return [("get", base, {}), ("post", f"{base}/power", {"json": {"action": "stop"}}), ("delete", base, {}),
                ("get", f"{base}/files", {}), ("get", f"{base}/files/content", {"params": {"path": "/x"}}),
                ("put", f"{base}/files/content", {"params": {"path": "/x"}, "content": b"no"}),
                ("post", f"{base}/backups", {}), ("get", f"{base}/backups", {}),
                ("post", f"{base}/backups/{b}/restore", {}), ("post", f"{base}/console", {}),
                ("post", "/api/support/create", {"json": {"subject": "s", "message": "m", "instance_id": other}})]
    if kind == "backup":
        return [("post", f"/api/instances/{i}/backups/{other}/restore", {})]
    if kind == "operation":
        return [("get", f"/api/operations/{other}", {})]
    if kind == "ticket":
        return [("get", f"/api/support/tickets/{other}", {}),
                ("post", f"/api/support/tickets/{other}/reply", {"json": {"message": "m"}})]
    raise AssertionError(kind)


def test_every_id_route_is_404_for_another_kind_another_customer_or_a_wrong_shape(
        hclient: TestClient, admin: dict) -> None:
    client = hclient
    alice, bob = make_customer(client, "alice@example.com"), make_customer(client, "bob@example.com")
    ids = ids_of_every_kind(client, alice, admin)
    for kind in ("instance", "backup", "operation", "ticket"):
        for other_kind, other in ids.items():
            if other_kind == kind:
                continue
            for method, url, kwargs in routes_taking(ids, kind, other):
                r = getattr(client, method)(url, headers=alice, **kwargs)
                assert_problem(r, 404, "not_found")
        for method, url, kwargs in routes_taking(ids, kind, "not-a-uuid"):
            if "instance_id" not in str(kwargs):  # a body field of the wrong shape is 422, like any body field
                assert_problem(getattr(client, method)(url, headers=alice, **kwargs), 404, "not_found")
        for method, url, kwargs in routes_taking(ids, kind, ids[kind]):
            assert_problem(getattr(client, method)(url, headers=bob, **kwargs), 404, "not_found")
    # Admin routes that take a user id: a customer learns nothing (403 whatever the id), an admin gets 404
    # for anything that is not a user.
    for url in (f"/api/admin/billing/{ids['user']}/events", f"/api/admin/billing/{ids['unknown']}/events",
                f"/api/admin/streams/{ids['user']}/events", "/api/admin/streams/not-a-uuid/events"):
        assert_problem(client.get(url, headers=alice), 403, "forbidden")
    for other_kind in ("instance", "operation", "ticket", "unknown"):
        assert_problem(client.put(f"/api/admin/users/{ids[other_kind]}/stripe", json={"customer_id": "cus_1"},
                                  headers=admin), 404, "not_found")
        assert_problem(client.post(f"/api/admin/billing/{ids[other_kind]}/actions", json={"action": "reevaluate"},
                                   headers=admin), 404, "not_found")
    assert client.get(f"/api/instances/{ids['instance']}", headers=alice).json()["status"] == "running"


# -- item 5: body limits before reading ---------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_before_they_are_read(
        app_and_client: tuple[Any, TestClient, Container]) -> None:
    app, client, _ = app_and_client
    alice = make_customer(client, "alice@example.com")
    iid = running_instance(client, alice)
    # 48 MiB declared, no token: 413 before a byte of the body is read (and before authentication).
    answer = asgi.request(app, "POST", "/api/support/create",
                          {"content-type": "application/json", "content-length": str(48 * MiB)},
                          asgi.megabytes(48 * MiB))
    assert answer.status == 413 and answer.json()["code"] == "too_large", answer.body
    assert answer.bytes_read == 0
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    # The same without a Content-Length (chunked): reading stops once the limit is passed.
    answer = asgi.request(app, "POST", "/api/support/create", {"content-type": "application/json"},
                          asgi.megabytes(48 * MiB))
    assert answer.status == 413 and answer.json()["code"] == "too_large", answer.body
    assert answer.bytes_read <= 2 * MiB
    # Uploads may carry 8 MiB, the webhook 1 MiB, whatever their Content-Length says.
    upload = f"/api/instances/{iid}/files/content"
    for path, headers, total, limit in (
            (upload, {**alice, "content-length": str(9 * MiB)}, 9 * MiB, 8 * MiB),
            (upload, alice, 9 * MiB, 8 * MiB),
            ("/api/billing/stripe/webhook", {"content-length": str(2 * MiB)}, 2 * MiB, MiB),
            ("/api/billing/stripe/webhook", {}, 2 * MiB, MiB)):
        answer = asgi.request(app, "PUT" if path == upload else "POST", path,
                              {k.lower(): v for k, v in headers.items()}, asgi.megabytes(total), query="path=/big")
        assert answer.status == 413 and answer.json()["code"] == "too_large", (path, answer.body)
        assert answer.bytes_read <= limit + MiB
    fits = client.put(upload, params={"path": "/eight"}, content=b"x" * (8 * MiB), headers=alice)
    assert fits.status_code == 204, fits.text
    assert_problem(client.put(upload, params={"path": "/big"}, content=b"x" * (8 * MiB + 1), headers=alice),
                   413, "too_large")
    assert_problem(client.post("/api/support/create", content=b" " * (MiB + 1),
                               headers={**alice, "Content-Type": "application/json"}), 413, "too_large")


def test_the_json_limit_follows_zlh_max_body(make_container: Callable[..., Container]) -> None:
    container = make_container(workers=("projections",), max_body="4KiB")
    with TestClient(create_app(container)) as client:
        alice = make_customer(client, "alice@example.com")
        r = client.post("/api/support/create", json={"subject": "s", "message": "m" * 5000}, headers=alice)
        assert_problem(r, 413, "too_large")
        assert "4 KiB" in r.json()["detail"]
        assert client.post("/api/support/create", json={"subject": "s", "message": "m" * 3000},
                           headers=alice).status_code == 201


# -- item 9: the browser ------------------------------------------------------------------------------


def test_every_response_carries_the_browser_protections(hclient: TestClient, admin: dict) -> None:
    client = hclient
    for method, url, headers in (("get", "/", {}), ("get", "/js/main.js", {}), ("get", "/docs", {}),
                                 ("get", "/openapi.json", {}), ("get", "/api/me", {}), ("get", "/api/me", admin),
                                 ("get", "/healthz", {}), ("get", "/metrics", {}), ("get", "/nope", {}),
                                 ("get", "/api/instances/not-a-uuid", admin),
                                 ("post", "/api/support/create", admin)):
        r = getattr(client, method)(url, headers=headers)
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (url, name, r.headers)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert client.get("/").headers["X-Frame-Options"] == "DENY"


def test_docs_load_nothing_from_another_origin(hclient: TestClient) -> None:
    import re

    client = hclient
    page = client.get("/docs")
    assert page.status_code == 200 and "<script>" not in page.text and "style=" not in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN


def test_console_tickets_stay_out_of_the_logs() -> None:
    import logging

    from services.infrastructure.logs import JsonFormatter, RedactSecrets

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/api/instances/x/console/ws?ticket=s3cret&x=1", "1.1", 101),
                               None)
    assert RedactSecrets().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert "s3cret" not in line["message"] and "ticket=[redacted]&x=1" in line["message"]
    other = logging.LogRecord("zlh", logging.INFO, __file__, 1, "ws %s", ("/c?ticket=abc",), None)
    assert "abc" not in JsonFormatter().format(other)


# -- done when ----------------------------------------------------------------------------------------


def test_every_bad_input_of_the_issue_leaves_the_service_caught_up(
        app_and_client: tuple[Any, TestClient, Container], driver: FakeDriver) -> None:
    from services.infrastructure import dead_letters

    app, client, container = app_and_client
    admin = auth(ADMIN_TOKEN)
    alice = make_customer(client, "alice@example.com")
    ids = ids_of_every_kind(client, alice, admin)
    iid = ids["instance"]

    # Every bad input listed under "Why".
    assert_problem(client.post("/api/support/create", json={"subject": "a\u0000b", "message": "m"}, headers=alice),
                   422, "validation_error")
    assert_problem(client.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b",
                                                                 "ends_at": FAR_FUTURE}, headers=admin),
                   422, "validation_error")
    for kind in ("operation", "backup", "ticket", "user"):
        assert_problem(client.get(f"/api/instances/{ids[kind]}", headers=alice), 404, "not_found")
        assert_problem(client.post(f"/api/instances/{ids[kind]}/power", json={"action": "stop"}, headers=alice),
                       404, "not_found")
    for method, url, kwargs in (("get", f"/api/instances/{iid}/files", {}),
                                ("get", f"/api/instances/{iid}/files/content", {}),
                                ("put", f"/api/instances/{iid}/files/content", {"content": b"x"})):
        r = getattr(client, method)(url, params={"path": f"/{LONG_NAME}"}, headers=alice, **kwargs)
        assert_problem(r, 400, "bad_path")
    superscript = [*alice.items(), ("Content-Type", "application/json"), ("If-Match", "²".encode("latin-1"))]
    assert_problem(client.put("/api/notes", content=b'{"content": "x"}', headers=superscript), 400, "bad_if_match")
    assert_problem(client.put("/api/notes", json={"content": "x"}, headers={**alice, "If-Match": "9" * 5000}),
                   400, "bad_if_match")
    assert_problem(raw_json(client, "PUT", "/api/notes", '{"content": "\\ud800"}', {**alice, "If-Match": "0"}),
                   422, "validation_error")
    assert_problem(stripe_post(client, invoice_event("evt_far", "payment_failed", "in_1", "cus_x", 0)
                               | {"created": 1e20}), 400, "bad_payload")
    big = asgi.request(app, "POST", "/api/support/create",
                       {"content-type": "application/json", "content-length": str(48 * MiB)},
                       asgi.megabytes(48 * MiB))
    assert big.status == 413 and big.bytes_read == 0
    # Text the other free-text routes refuse too: a lone surrogate in a reply, control characters in a title.
    assert_problem(raw_json(client, "POST", f"/api/support/tickets/{ids['ticket']}/reply",
                            '{"message": "\\ud800"}', alice), 422, "validation_error")
    assert_problem(client.post("/api/admin/announcements", json={"level": "info", "title": "\u0007", "body": "b"},
                               headers=admin), 422, "validation_error")
    # A failing node agent: a problem with a stable code, and its address is nowhere in the answer.
    driver.fail_on["list_files"] = DriverError("agent_unreachable", "http://10.1.2.3:8100/files: refused")
    unreachable = client.get(f"/api/instances/{iid}/files", headers=alice)
    assert_problem(unreachable, 503, "node_unavailable")
    assert "10.1.2.3" not in unreachable.text
    del driver.fail_on["list_files"]
    # One customer cannot flood the support desk: the day's quota, then 409 with nothing written.
    opened = len(client.get("/api/support/tickets", headers=alice).json()["items"])
    flood = [client.post("/api/support/create", json={"subject": f"flood {n}", "message": "m"}, headers=alice)
             for n in range(container.settings.max_tickets_per_day - opened + 1)]
    assert [r.status_code for r in flood[:-1]] == [201] * (len(flood) - 1), flood[-2].text
    assert_problem(flood[-1], 409, "quota_exceeded")
    assert all(r.headers[RYW] == "caught-up" for r in flood[:-1])

    # Every read model has caught up: nothing is stuck on an event it cannot hold, and no follower (read model or
    # process manager) skipped one as a dead letter.
    def projections() -> list[dict[str, Any]]:
        return client.get("/api/admin/projections", headers=admin).json()["items"]

    caught_up = poll(projections, lambda items: all(p["position"] == p["head"] for p in items))
    for item in caught_up:
        assert item["lag"] == 0 and not item["dead_letters"], item
    assert dead_letters.unresolved(container.db) == []
    poll(lambda: next(q for q in client.get("/api/admin/queues", headers=admin).json()["items"]
                      if q["name"] == "provisioning"), lambda q: q["lag"] == 0)

    # And every later write is answered with its read models caught up (alice used up today's tickets: bob
    # opens one).
    made = client.post("/api/admin/users", json={"email": "bob@example.com"}, headers=admin)
    bob = auth(made.json()["token"])
    writes = [
        made,
        client.post("/api/support/create", json={"subject": "after", "message": "all that"}, headers=bob),
        client.post("/api/admin/announcements", json={"level": "info", "title": "after", "body": "b"},
                    headers=admin),
        client.put("/api/notes", json={"content": "after"}, headers={**alice, "If-Match": "0"}),
        create(client, alice, "after-key", {"kind": "game", "name": "after", "template": "minecraft"}),
        client.post(f"/api/instances/{iid}/power", json={"action": "stop"}, headers=alice),
    ]
    for response in writes:
        assert response.status_code in (200, 201, 202), response.text
        if response.request.url.path != "/api/notes":  # the notepad reads its own stream: no read model to wait for
            assert response.headers[RYW] == "caught-up", (response.request.url, response.headers)
    assert client.get("/api/support/tickets", headers=bob).json()["items"][0]["subject"] == "after"
    assert dead_letters.unresolved(container.db) == []
