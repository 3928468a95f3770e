"""Templates through the API, on SQLite and PostgreSQL, with the fake driver: the list, variables on
create (checked, recorded with the instance, given to the driver), idempotency with variables, and
operator templates from `ZLH_TEMPLATES_DIR`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from uuid import UUID, uuid4

from fastapi.testclient import TestClient

from api.app import create_app
from domain.instance import Instance
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from tests.integration.conftest import auth, poll
from tests.integration.test_api import assert_problem, create, make_customer, wait_operation


def running(client: TestClient, headers: dict, iid: str) -> dict:
    return poll(lambda: client.get(f"/api/instances/{iid}", headers=headers).json(),
                lambda i: i["status"] == "running" and i["pending_operation_id"] is None)


def test_templates_are_listed_with_their_variables(client: TestClient, new_user: Callable) -> None:
    assert_problem(client.get("/api/templates"), 401, "unauthorized")
    alice = new_user("alice@example.com")
    items = client.get("/api/templates", headers=alice).json()["items"]
    assert [(t["kind"], t["name"]) for t in items] == [("game", "minecraft"), ("game", "paper"),
                                                       ("dev", "node"), ("dev", "python")]
    minecraft = items[0]
    assert minecraft["available"] is True and minecraft["resources"] == {"memory_mb": 1024, "cpus": 1.0,
                                                                           "disk_mb": 4096}
    variables = {v["name"]: v for v in minecraft["variables"]}
    assert variables["max_players"] == {
        "name": "max_players", "description": "How many players may be online at once", "type": "int",
        "default": 20, "required": False, "generated": False, "secret": False, "constraints": {"min": 1, "max": 100}}
    assert variables["online_mode"]["type"] == "bool" and variables["online_mode"]["default"] is False
    token = next(v for v in items[3]["variables"] if v["name"] == "token")
    assert token["generated"] and token["secret"] and token["default"] is None
    paper = items[1]
    assert paper["available"] is False and "jar_url" not in {v["name"] for v in paper["variables"]}


def test_variables_are_checked_recorded_and_given_to_the_driver(
        client: TestClient, admin: dict, new_user: Callable, driver: FakeDriver) -> None:
    alice = new_user("alice@example.com")
    body = {"kind": "game", "name": "alpha", "template": "minecraft",
            "variables": {"motd": "Alice's world", "max_players": 8, "online_mode": True}}
    created = create(client, alice, "k1", body)
    assert created.status_code == 202, created.text
    assert wait_operation(client, alice, created.json()["operation_id"])["phase"] == "succeeded"
    iid = created.json()["instance_id"]
    running(client, alice, iid)
    stream = client.get(f"/api/admin/streams/{iid}/events", headers=admin).json()["events"]
    assert stream[0]["type"] == "zlh.Instance.Requested"
    assert stream[0]["data"]["variables"] == {"memory": 512, "motd": "Alice's world", "max_players": 8,
                                              "online_mode": True, "view_distance": 6}
    settings = json.loads(client.get(f"/api/instances/{iid}/files/content", params={"path": "/settings.json"},
                                     headers=alice).content)
    assert (settings["motd"], settings["max-players"], settings["online-mode"]) == ("Alice's world", 8, True)
    assert ("install", UUID(iid)) in driver.calls
    assert driver.installed == [driver.installed[0]] and driver.installed[0].startswith("minecraft-")


def test_a_bad_variable_is_422_naming_it_and_nothing_is_written(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    cases = [
        ({"motd": "x" * 60}, "variables.motd", "at most 59 characters"),
        ({"max_players": 0}, "variables.max_players", "at least 1"),
        ({"max_players": "20"}, "variables.max_players", "whole number"),
        ({"online_mode": "no"}, "variables.online_mode", "true or false"),
        ({"colour": "red"}, "variables.colour", "is not a variable of template minecraft"),
        ({"memory": "lots"}, "variables.memory", "megabytes"),
    ]
    for n, (variables, field, message) in enumerate(cases):
        body = {"kind": "game", "name": f"bad{n}", "template": "minecraft", "variables": variables}
        response = create(client, alice, f"bad-{n}", body)
        assert_problem(response, 422, "validation_error")
        assert response.json()["field"] == field and response.json()["detail"].startswith(f"{field}: ")
        assert message in response.json()["detail"]
    assert_problem(create(client, alice, "nv", {"kind": "game", "name": "x", "template": "minecraft",
                                                "variables": ["motd"]}), 422, "validation_error")
    assert_problem(create(client, alice, "ut", {"kind": "game", "name": "x", "template": "python"}),
                   422, "unknown_template")
    assert_problem(create(client, alice, "up", {"kind": "game", "name": "x", "template": "paper"}),
                   422, "template_unavailable")
    assert client.get("/api/instances", headers=alice).json()["items"] == []


def test_variables_are_part_of_the_idempotency_fingerprint(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    plain = {"kind": "game", "name": "alpha", "template": "minecraft"}
    first = create(client, alice, "same", plain)
    assert first.status_code == 202
    empty = create(client, alice, "same", {**plain, "variables": {}})  # no variables is no variables
    assert empty.status_code == 202 and empty.json() == first.json()
    assert empty.headers["idempotent-replayed"] == "true"
    assert_problem(create(client, alice, "same", {**plain, "variables": {"motd": "other"}}), 422,
                   "idempotency_key_reused")
    with_vars = {**plain, "name": "beta", "variables": {"motd": "Beta", "max_players": 3}}
    second = create(client, alice, "vars", with_vars)
    reordered = {**with_vars, "variables": {"max_players": 3, "motd": "Beta"}}
    again = create(client, alice, "vars", reordered)
    assert again.json() == second.json() and again.headers["idempotent-replayed"] == "true"


def test_each_python_instance_gets_its_own_token_in_its_address(client: TestClient, new_user: Callable) -> None:
    bob = new_user("bob@example.com")
    addresses = []
    for name in ("one", "two"):
        created = create(client, bob, name, {"kind": "dev", "name": name, "template": "python"})
        assert wait_operation(client, bob, created.json()["operation_id"])["phase"] == "succeeded"
        addresses.append(running(client, bob, created.json()["instance_id"])["address"])
    tokens = [a.split("/lab?token=")[1] for a in addresses]
    assert all(a.startswith("http://127.0.0.1:") for a in addresses)
    assert len(tokens[0]) == 32 and tokens[0] != tokens[1]
    chosen = create(client, bob, "three", {"kind": "dev", "name": "three", "template": "python",
                                           "variables": {"token": "my-own-token-0123456789"}})
    wait_operation(client, bob, chosen.json()["operation_id"])
    assert running(client, bob, chosen.json()["instance_id"])["address"].endswith("?token=my-own-token-0123456789")


def test_an_instance_recorded_before_templates_had_variables_still_loads() -> None:
    """Events stored before `variables` existed decode with none (the store rebuilds events this way)."""
    state = {"originator_id": uuid4(), "originator_version": 1, "timestamp": Instance.Requested.create_timestamp(),
             "originator_topic": "zlh.Instance", "owner_id": uuid4(), "kind": "game", "name": "old",
             "template": "minecraft", "edge_name": "old-1", "operation_id": uuid4()}
    event = object.__new__(Instance.Requested)
    event.__dict__.update(state)
    instance = event.mutate(None)
    assert instance is not None and instance.variables == {} and instance.template == "minecraft"


def test_operator_templates_are_offered_beside_the_shipped_ones(
        make_container: Callable[..., Container], tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "creative.toml").write_text('extends = "minecraft"\ndescription = "Creative for 50"\n'
                                          "[variables.max_players]\ndefault = 50\n")
    container = make_container(templates_dir=str(folder))
    client = TestClient(create_app(container))
    alice = make_customer(client, "alice@example.com")
    names = [t["name"] for t in client.get("/api/templates", headers=alice).json()["items"]]
    assert "creative" in names
    created = create(client, alice, "c", {"kind": "game", "name": "big", "template": "creative"})
    assert wait_operation(client, alice, created.json()["operation_id"])["phase"] == "succeeded"
    settings = client.get(f"/api/instances/{created.json()['instance_id']}/files/content",
                          params={"path": "/settings.json"}, headers=auth(alice["Authorization"].split()[1]))
    assert json.loads(settings.content)["max-players"] == 50
