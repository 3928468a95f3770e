"""Every list route is paginated the same way: `?limit=` (default 100, at most 500), `?cursor=`, `next_cursor`."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.integration.conftest import ADMIN_TOKEN, auth
from tests.integration.test_api import assert_problem, make_customer


def list_routes(client: TestClient) -> list[str]:
    """The GET routes whose answer is a list of items, read from the OpenAPI document."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    routes = []
    for path, methods in spec["paths"].items():
        get = methods.get("get")
        if get is None:
            continue
        ref = get["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
        name = ref.get("$ref", "").rsplit("/", 1)[-1]
        if name and "items" in schemas.get(name, {}).get("properties", {}):
            routes.append(path)
    return routes


def test_every_list_route_takes_limit_and_cursor_and_answers_next_cursor(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    routes = list_routes(client)
    assert "/api/instances" in routes and "/api/admin/users" in routes and len(routes) >= 10
    for path in routes:
        params = {p["name"] for p in spec["paths"][path]["get"].get("parameters", [])}
        assert {"limit", "cursor"} <= params, f"{path} is not paginated"
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert "next_cursor" in spec["components"]["schemas"][name]["properties"], f"{path} has no next_cursor"


def test_pages_walk_every_item_once_newest_first(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    made = []
    for n in range(5):
        r = client.post("/api/instances", json={"kind": "game", "name": f"s{n}", "template": "minecraft"},
                        headers={**alice, "Idempotency-Key": f"k{n}"})
        assert r.status_code == 202, r.text
        made.append(r.json()["instance_id"])
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get("/api/instances", params=params, headers=alice).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(made))
    whole = client.get("/api/instances", headers=alice).json()
    assert [i["id"] for i in whole["items"]] == seen and whole["next_cursor"] is None


def test_short_lists_page_too(client: TestClient) -> None:
    admin = auth(ADMIN_TOKEN)
    first = client.get("/api/admin/projections", params={"limit": 3}, headers=admin).json()
    rest = client.get("/api/admin/projections", params={"cursor": first["next_cursor"]}, headers=admin).json()
    everything = client.get("/api/admin/projections", headers=admin).json()["items"]
    assert [p["name"] for p in first["items"] + rest["items"]] == [p["name"] for p in everything]
    assert len(first["items"]) == 3 and rest["next_cursor"] is None


def test_bad_limits_and_cursors_are_clear_errors(client: TestClient) -> None:
    alice = make_customer(client, "bad@example.com")
    for limit in (0, 501, -1):
        assert_problem(client.get("/api/instances", params={"limit": limit}, headers=alice), 422, "validation_error")
    for cursor in ("not-base64!", "eyJ4IjogMX0", "WyJhIl0"):  # garbage, a JSON object, a one-key cursor
        assert_problem(client.get("/api/instances", params={"cursor": cursor}, headers=alice), 400, "bad_cursor")
    assert_problem(client.get("/api/admin/queues", params={"cursor": "WyJ4Il0"}, headers=auth(ADMIN_TOKEN)),
                   400, "bad_cursor")
