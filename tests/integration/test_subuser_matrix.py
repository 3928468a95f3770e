"""Every route under `/api/instances/{instance_id}` checks the caller's permission on that server.

The routes come from the OpenAPI document, so a new route that is not in `ROUTES` fails here until it says
what it needs. For each route: a stranger gets 404; a subuser holding every permission but the route's
gets 403 `permission_denied` naming it; a subuser holding only the route's permission gets past the check
(whatever the route then answers, it is not 403 and not "no such instance"). Owner-only routes refuse a
subuser holding every permission. And the app itself is checked: each such route depends on the one
access dependency (api/server_access.py) with the permission listed here.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient

from api.app import create_app
from api.server_access import PERMISSION_ATTRIBUTE
from domain.subuser import PERMISSIONS
from services.bootstrap import Container
from services.server_access import MANAGE, MEMBER, TASK_PERMISSIONS
from tests.integration.test_api import assert_problem, make_customer, wait_operation
from tests.integration.test_lifecycle import running_instance

BASE = "/api/instances/{instance_id}"
SAY = {"name": "say", "cron": "@daily", "tasks": [{"action": "command", "payload": "say hi"}]}

#: (method, path) -> (the permission it needs, the request's keyword arguments)
ROUTES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("get", BASE): (MEMBER, {}),
    ("delete", BASE): (MANAGE, {}),
    ("patch", BASE): ("settings", {"json": {"name": "renamed"}}),
    ("post", f"{BASE}/power"): ("power", {"json": {"action": "start"}}),
    ("post", f"{BASE}/console"): ("console", {}),
    ("get", f"{BASE}/files"): ("files.read", {"params": {"path": "/"}}),
    ("get", f"{BASE}/files/content"): ("files.read", {"params": {"path": "/hello.txt"}}),
    ("put", f"{BASE}/files/content"): ("files.write", {"params": {"path": "/hello.txt"}, "content": b"hi"}),
    ("get", f"{BASE}/backups"): ("backups", {}),
    ("post", f"{BASE}/backups"): ("backups", {}),
    ("post", f"{BASE}/backups/{{backup_id}}/restore"): ("backups", {}),
    ("delete", f"{BASE}/backups/{{backup_id}}"): ("backups", {}),
    ("get", f"{BASE}/backups/retention"): ("backups", {}),
    ("put", f"{BASE}/backups/retention"): ("backups", {"json": {"keep": 3}}),
    ("get", f"{BASE}/schedules"): ("schedules", {}),
    ("post", f"{BASE}/schedules"): ("schedules", {"json": SAY}),
    ("get", f"{BASE}/schedules/{{schedule_id}}"): ("schedules", {}),
    ("patch", f"{BASE}/schedules/{{schedule_id}}"): ("schedules", {"json": {"name": "renamed"}}),
    ("post", f"{BASE}/schedules/{{schedule_id}}/run"): ("schedules", {}),
    ("get", f"{BASE}/schedules/{{schedule_id}}/runs"): ("schedules", {}),
    ("get", f"{BASE}/schedules/{{schedule_id}}/runs/{{run_id}}"): ("schedules", {}),
    ("delete", f"{BASE}/schedules/{{schedule_id}}"): ("schedules", {}),
    ("get", f"{BASE}/activity"): (MANAGE, {}),
    ("get", f"{BASE}/stats"): (MEMBER, {}),
    ("get", f"{BASE}/sftp"): ("files.read", {}),
    ("post", f"{BASE}/sftp/password"): ("files.read", {}),
    ("get", f"{BASE}/subusers"): (MANAGE, {}),
    ("post", f"{BASE}/subusers"): (MANAGE, {"json": {"email": "new@example.com", "permissions": []}}),
    ("get", f"{BASE}/subusers/{{user_id}}"): (MANAGE, {}),
    ("patch", f"{BASE}/subusers/{{user_id}}"): (MANAGE, {"json": {"permissions": ["power"]}}),
    ("delete", f"{BASE}/subusers/{{user_id}}"): (MANAGE, {}),
}
#: What else a subuser needs for the route to get past its checks with this test's data (a schedule of
#: `command` tasks needs `console` too).
ALSO_NEEDED = {"schedules": [TASK_PERMISSIONS["command"]]}
METHODS = ("get", "put", "post", "patch", "delete")


def instance_routes(client: TestClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return {(method, path) for path, item in spec["paths"].items() if path == BASE or path.startswith(f"{BASE}/")
            for method in item if method in METHODS}


def test_every_instance_route_is_in_the_matrix(client: TestClient) -> None:
    found = instance_routes(client)
    assert found - ROUTES.keys() == set(), "routes with no permission listed here: add them to ROUTES"
    assert ROUTES.keys() - found == set(), "ROUTES lists routes the API does not have"


def test_every_instance_route_depends_on_the_access_check(container: Container) -> None:
    def permissions(dependant: Any) -> list[str]:
        found = [getattr(dependant.call, PERMISSION_ATTRIBUTE)] if hasattr(dependant.call, PERMISSION_ATTRIBUTE) \
            else []
        return found + [p for d in dependant.dependencies for p in permissions(d)]

    def walk(routes: list[Any]) -> list[Any]:  # FastAPI keeps included routers as they are, prefixes applied
        return [leaf for r in routes for leaf in (walk(r.original_router.routes) if hasattr(r, "original_router")
                                                  else [r])]

    checked = 0
    for route in walk(create_app(container).routes):
        if isinstance(route, APIWebSocketRoute):
            assert route.path == f"{BASE}/console/ws", f"{route.path}: a socket under an instance checks its ticket"
            continue
        if not isinstance(route, APIRoute) or not (route.path == BASE or route.path.startswith(f"{BASE}/")):
            continue  # operators' routes (`/api/admin/instances/{instance_id}/...`) are admin-only
        for method in route.methods - {"HEAD"}:
            expected = ROUTES[(method.lower(), route.path)][0]
            assert permissions(route.dependant) == [expected], f"{method} {route.path}"
            checked += 1
    assert checked == len(ROUTES)


def test_each_route_refuses_strangers_and_subusers_without_its_permission(client: TestClient) -> None:
    alice = make_customer(client, "owner@example.com")
    bob = make_customer(client, "sub@example.com")
    dave = make_customer(client, "stranger@example.com")
    make_customer(client, "other-sub@example.com")
    iid = running_instance(client, alice)
    r = client.post(f"/api/instances/{iid}/backups", headers=alice)
    wait_operation(client, alice, r.json()["operation_id"])
    backup_id = r.json()["backup_id"]
    schedule_id = client.post(f"/api/instances/{iid}/schedules", json=SAY, headers=alice).json()["id"]
    run_id = client.post(f"/api/instances/{iid}/schedules/{schedule_id}/run", headers=alice).json()["run_id"]
    bob_id = client.post(f"/api/instances/{iid}/subusers", json={"email": "sub@example.com", "permissions": []},
                         headers=alice).json()["user_id"]
    other_id = client.post(f"/api/instances/{iid}/subusers", json={"email": "other-sub@example.com",
                                                                   "permissions": []}, headers=alice).json()["user_id"]
    ids = {"instance_id": iid, "backup_id": backup_id, "schedule_id": schedule_id, "run_id": run_id,
           "user_id": other_id}

    def give(permissions: list[str]) -> None:
        r = client.patch(f"/api/instances/{iid}/subusers/{bob_id}", json={"permissions": permissions}, headers=alice)
        assert r.status_code == 200, r.text

    # Owner-only routes that change things last: deleting the server ends the walk.
    order = sorted(ROUTES, key=lambda route: (route == ("delete", BASE), route[0] == "delete", route))
    for method, template in order:
        need, kwargs = ROUTES[(method, template)]
        path = template.format(**ids)
        where = f"{method.upper()} {template}"
        stranger = client.request(method, path, headers=dave, **kwargs)
        assert stranger.status_code == 404 and stranger.json()["code"] == "not_found", where
        if need == MEMBER:
            give([])
            assert client.request(method, path, headers=bob, **kwargs).status_code == 200, where
            continue
        if need == MANAGE:
            give(list(PERMISSIONS))
            denied = client.request(method, path, headers=bob, **kwargs)
            assert_problem(denied, 403, "permission_denied")
            assert denied.json()["permission"] == MANAGE, where
            continue
        give([p for p in PERMISSIONS if p != need])
        denied = client.request(method, path, headers=bob, **kwargs)
        assert_problem(denied, 403, "permission_denied")
        assert denied.json()["permission"] == need, where
        give([need, *ALSO_NEEDED.get(need, [])])
        allowed = client.request(method, path, headers=bob, **kwargs)
        assert allowed.status_code != 403, (where, allowed.text)
        assert not (allowed.status_code == 404 and allowed.json()["detail"] == "no such instance"), where
        assert allowed.status_code < 500, (where, allowed.text)
    # The owner reaches the owner-only routes (the delete of the server came last).
    assert client.get(f"/api/instances/{iid}/activity", headers=alice).status_code == 200
