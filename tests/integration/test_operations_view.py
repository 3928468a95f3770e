"""Operators' views: queue staleness and Prometheus metrics after a provisioning run."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from api.app import create_app
from services.bootstrap import Container
from tests.integration.test_api import assert_problem, create, make_customer, wait_operation

ADMIN = {"Authorization": "Bearer test-admin-token"}


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text; AssertionError if absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == want:
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{{{want}}}")


def test_queues_show_pending_work_and_staleness(make_container: Callable[..., Container]) -> None:
    container = make_container(workers=("projections",))  # no provisioning worker: work stays queued
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")
    create(client, alice, "k")
    items = {q["name"]: q for q in client.get("/api/admin/queues", headers=ADMIN).json()["items"]}
    assert set(items) == {"provisioning", "repair", "billing_enforcement", "notifications", "scheduler"}
    assert items["scheduler"]["pending"] == 0 and items["scheduler"]["oldest_pending_age_seconds"] is None
    assert items["provisioning"]["pending"] == 1
    assert items["provisioning"]["oldest_pending_age_seconds"] >= 0
    assert items["provisioning"]["lag"] > 0  # the provisioning manager has read nothing
    assert_problem(client.get("/api/admin/queues", headers=alice), 403, "forbidden")
    container.start(("provisioning",))
    client.get("/api/admin/queues", headers=ADMIN)
    from tests.integration.conftest import poll

    poll(lambda: {q["name"]: q for q in client.get("/api/admin/queues", headers=ADMIN).json()["items"]},
         lambda qs: qs["provisioning"]["pending"] == 0 and qs["provisioning"]["oldest_pending_age_seconds"] is None)


def test_metrics_after_a_provisioning_run(client: TestClient) -> None:
    alice = make_customer(client, "alice@example.com")
    body = create(client, alice, "k").json()
    assert wait_operation(client, alice, body["operation_id"])["phase"] == "succeeded"
    text = client.get("/metrics").text
    assert metric(text, "zlh_ready") == 1
    assert metric(text, "zlh_events_appended_total", type="Operation.Succeeded") >= 1
    assert metric(text, "zlh_operations", kind="create", phase="succeeded") == 1
    assert metric(text, "zlh_http_requests_total", method="POST", route="/api/instances", status="202") >= 1
    assert metric(text, "zlh_queue_pending", queue="provisioning") == 0
    assert metric(text, "zlh_log_head_position") > 0
    assert metric(text, "zlh_consumer_lag_events", consumer="instances") >= 0
    # Labels carry route templates and kinds, never ids, emails or tokens.
    assert body["instance_id"] not in text and "alice@example.com" not in text and "test-admin-token" not in text


def test_file_sd_targets_follow_instances(client: TestClient, container: Container) -> None:
    from pathlib import Path

    from projections.monitoring import read_targets
    from tests.integration.conftest import poll
    from tests.integration.test_lifecycle import finish_power, instance, run, running_instance

    data = Path(container.settings.data_dir)
    alice = make_customer(client, "alice@example.com")
    alice_id = client.get("/api/me", headers=alice).json()["id"]
    game = running_instance(client, alice, "game1")
    address = client.get(f"/api/instances/{game}", headers=alice).json()["address"]
    targets = poll(lambda: read_targets(data), lambda t: len(t) == 1)
    assert targets == [{"targets": [address], "labels": {"instance_id": game, "kind": "game", "owner_id": alice_id}}]
    assert "alice@example.com" not in (data / "monitoring/targets/zlh-instances.json").read_text()
    finish_power(client, alice, game, "stop", "stopped")
    poll(lambda: read_targets(data), lambda t: t == [])
    finish_power(client, alice, game, "start", "running")
    poll(lambda: read_targets(data), lambda t: len(t) == 1)
    container.runners["monitoring"].rebuild()
    assert [t["labels"]["instance_id"] for t in read_targets(data)] == [game]
    assert run(client, alice, client.delete(f"/api/instances/{game}", headers=alice))["phase"] == "succeeded"
    instance(client, alice, game, "deleted")
    poll(lambda: read_targets(data), lambda t: t == [])


def test_request_id_is_returned_and_kept_when_tame(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"
