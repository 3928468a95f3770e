"""The console WebSocket's every exit: bad ticket, agent timeout, server stopped; and reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from api.routers import console as console_router
from services.adapters.fake_driver import FakeDriver
from services.ports import InstanceSpec
from tests.integration.test_api import assert_problem
from tests.integration.test_lifecycle import finish_power, running_instance


class FakeConsoleSocket:
    """Echoes `say TEXT` as `[server] TEXT`, like the stand-in does through the agent."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, text: str) -> None:
        if text.startswith("say "):
            await self.lines.put(f"[server] {text[4:]}")

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        return await self.lines.get()


class ConsoleDriver(FakeDriver):
    def __init__(self) -> None:
        super().__init__()
        self.hang = False

    @asynccontextmanager
    async def console(self, spec: InstanceSpec, connect_timeout: float = 10.0) -> AsyncIterator[Any]:
        if self.hang:
            await asyncio.sleep(3600)  # an agent that never answers
        yield FakeConsoleSocket()


@pytest.fixture
def driver() -> FakeDriver:
    return ConsoleDriver()


def ticket_path(client: TestClient, headers: dict, iid: str) -> str:
    response = client.post(f"/api/instances/{iid}/console", headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["url"].startswith("ws://") and body["expires_at"].endswith("Z")
    parts = urlsplit(body["url"])
    return f"{parts.path}?{parts.query}"


def closed_with(client: TestClient, path: str) -> tuple[int, str]:
    with client.websocket_connect(path) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    return closed.value.code, closed.value.reason


def test_round_trip_and_single_use(client: TestClient, new_user: Callable) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    path = ticket_path(client, alice, iid)
    with client.websocket_connect(path) as ws:
        ws.send_text("say hello")
        assert ws.receive_text() == "[server] hello"
    assert closed_with(client, path)[0] == 4401
    assert closed_with(client, path.replace("ticket=", "ticket=x"))[0] == 4401


def test_agent_timeout_closes_clearly_and_reconnect_works(
    client: TestClient, new_user: Callable, driver: ConsoleDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_router, "CONNECT_TIMEOUT", 0.3)
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    driver.hang = True
    code, reason = closed_with(client, ticket_path(client, alice, iid))
    assert code == 4504 and "did not answer" in reason
    driver.hang = False
    with client.websocket_connect(ticket_path(client, alice, iid)) as ws:
        ws.send_text("say back")
        assert ws.receive_text() == "[server] back"


def test_stopping_the_server_closes_the_console(
    client: TestClient, new_user: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_router, "STATUS_CHECK_INTERVAL", 0.05)
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    with client.websocket_connect(ticket_path(client, alice, iid)) as ws:
        finish_power(client, alice, iid, "stop", "stopped")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 4410
    assert_problem(client.post(f"/api/instances/{iid}/console", headers=alice), 409, "instance_not_running")


def test_every_console_command_is_in_the_activity_log_with_its_sender(client: TestClient, new_user: Callable,
                                                                     admin: dict) -> None:
    alice = new_user("alice@example.com")
    iid = running_instance(client, alice)
    with client.websocket_connect(ticket_path(client, alice, iid)) as ws:
        ws.send_text("say from alice")
        assert ws.receive_text() == "[server] from alice"
    with client.websocket_connect(ticket_path(client, admin, iid)) as ws:
        ws.send_text("say from staff")
        assert ws.receive_text() == "[server] from staff"

    def commands() -> list[tuple[str, str]]:
        items = client.get(f"/api/instances/{iid}/activity", headers=alice).json()["items"]
        return [(i["actor"]["email"], i["detail"]["command"]) for i in items if i["action"] == "console.command"]

    from tests.integration.conftest import poll

    assert poll(commands, lambda c: len(c) == 2) == [("admin@zlh.localhost", "say from staff"),
                                                     ("alice@example.com", "say from alice")]
