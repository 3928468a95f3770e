"""Live stats, the disk quota and out-of-memory exits through the HTTP API (fake driver)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4

from fastapi.testclient import TestClient

from services.adapters.fake_driver import FakeDriver
from services.ports import DriverError
from tests.integration.conftest import poll
from tests.integration.test_api import assert_problem, create, wait_operation


def running(client: TestClient, headers: dict[str, str], key: str = "k", body: dict | None = None) -> str:
    accepted = create(client, headers, key, body).json()
    assert wait_operation(client, headers, accepted["operation_id"])["phase"] == "succeeded"
    poll(lambda: client.get(f"/api/instances/{accepted['instance_id']}", headers=headers).json(),
         lambda i: i["status"] == "running")
    return str(accepted["instance_id"])


def test_stats_of_a_running_game_server(client: TestClient, new_user: Callable, driver: FakeDriver) -> None:
    alice = new_user("alice@example.com")
    iid = running(client, alice)
    driver.samples[UUID(iid)] = {"cpu_percent": 12.5, "memory_bytes": 300_000_000, "players_online": 3,
                                 "players_max": 20}
    body = client.get(f"/api/instances/{iid}/stats", headers=alice).json()
    current = body["current"]
    assert {"cpu_percent", "memory_bytes", "disk_bytes", "players_online", "players_max", "sampled_at"} <= set(current)
    assert (current["cpu_percent"], current["players_online"], current["players_max"]) == (12.5, 3, 20)
    assert body["history"] and body["history"][-1]["cpu_percent"] == 12.5
    assert body["disk_quota_bytes"] == driver.disk_quota


def test_stats_follow_the_404_rules_of_every_instance_route(client: TestClient, new_user: Callable) -> None:
    alice, bob = new_user("alice@example.com"), new_user("bob@example.com")
    iid = running(client, alice)
    assert_problem(client.get(f"/api/instances/{iid}/stats", headers=bob), 404, "not_found")
    assert_problem(client.get(f"/api/instances/{uuid4()}/stats", headers=alice), 404, "not_found")
    assert_problem(client.get("/api/instances/not-a-uuid/stats", headers=alice), 404, "not_found")
    operation = create(client, alice, "k2", {"kind": "game", "name": "beta", "template": "minecraft"}).json()
    assert_problem(client.get(f"/api/instances/{operation['operation_id']}/stats", headers=alice), 404, "not_found")


def test_current_is_null_while_the_instance_is_not_running(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    iid = running(client, alice)
    stop = client.post(f"/api/instances/{iid}/power", json={"action": "stop"}, headers=alice).json()
    assert wait_operation(client, alice, stop["operation_id"])["phase"] == "succeeded"
    poll(lambda: client.get(f"/api/instances/{iid}", headers=alice).json(), lambda i: i["status"] == "stopped")
    assert client.get(f"/api/instances/{iid}/stats", headers=alice).json()["current"] is None


def test_a_write_over_the_disk_quota_is_409_quota_exceeded_and_usage_shows_on_the_instance(
        client: TestClient, new_user: Callable, driver: FakeDriver) -> None:
    alice = new_user("alice@example.com")
    iid = running(client, alice)
    used = client.get(f"/api/instances/{iid}", headers=alice).json()["disk_bytes"]
    driver.disk_quota = used + 1000
    ok = client.put(f"/api/instances/{iid}/files/content?path=/a.bin", content=b"a" * 600, headers=alice)
    assert ok.status_code == 204, ok.text
    refused = client.put(f"/api/instances/{iid}/files/content?path=/b.bin", content=b"b" * 600, headers=alice)
    assert_problem(refused, 409, "quota_exceeded")
    assert refused.json()["quota"] == "disk"
    instance = client.get(f"/api/instances/{iid}", headers=alice).json()
    assert instance["disk_bytes"] == used + 600
    assert instance["disk_quota_bytes"] == used + 1000
    names = [e["name"] for e in client.get(f"/api/instances/{iid}/files?path=/", headers=alice).json()["entries"]]
    assert "b.bin" not in names


def test_an_instance_page_still_answers_when_its_node_gives_no_figures(client: TestClient, new_user: Callable,
                                                                      driver: FakeDriver) -> None:
    alice = new_user("alice@example.com")
    iid = running(client, alice)
    driver.fail_on["stats"] = DriverError("agent_unreachable", "the node agent cannot be reached")
    instance = client.get(f"/api/instances/{iid}", headers=alice)
    assert instance.status_code == 200 and instance.json()["disk_bytes"] is None
    assert_problem(client.get(f"/api/instances/{iid}/stats", headers=alice), 503, "node_unavailable")


def test_a_start_killed_for_memory_fails_its_operation_with_out_of_memory(client: TestClient, new_user: Callable,
                                                                          driver: FakeDriver) -> None:
    driver.fail_on["wait_connectable"] = DriverError(
        "out_of_memory", "the kernel killed the server: it went over its memory limit of 1024 MiB")
    alice = new_user("alice@example.com")
    accepted = create(client, alice, "k").json()
    operation = wait_operation(client, alice, accepted["operation_id"])
    assert operation["phase"] == "failed"
    assert operation["error"]["code"] == "out_of_memory"
    assert "memory limit" in operation["error"]["message"]


def test_per_instance_metrics_are_served_apart_labelled_as_the_file_sd_targets(
        client: TestClient, new_user: Callable, driver: FakeDriver) -> None:
    from tests.integration.test_operations_view import metric

    alice = new_user("alice@example.com")
    iid = running(client, alice)
    driver.samples[UUID(iid)] = {"cpu_percent": 42.0, "memory_bytes": 123_456, "players_online": 2}
    owner = client.get("/api/me", headers=alice).json()["id"]
    text = client.get("/metrics/instances").text
    labels = {"instance_id": iid, "kind": "game", "owner_id": owner}
    assert metric(text, "zlh_instance_cpu_percent", **labels) == 42.0
    assert metric(text, "zlh_instance_memory_bytes", **labels) == 123_456
    assert metric(text, "zlh_instance_players_online", **labels) == 2
    assert metric(text, "zlh_instance_players_max", **labels) == 20
    assert iid not in client.get("/metrics").text  # the main /metrics never carries ids
