"""The node agent: fails closed without a secret, 401 and nothing done without the right bearer,
problem documents for driver errors, and the console WebSocket (a `say hello` round trip).

The agent runs in a thread over a `LocalDriver` on `tmp_path` with a fresh random secret; every
stand-in is killed in teardown.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.adapters.agent_client import AgentDriver
from services.agent.driver import LocalDriver
from services.agent.server import create_agent_app, run_agent, start_agent_in_thread
from services.ports import DriverError, InstanceSpec
from tests.contract.test_driver_contract import WRITE_LIMIT, local_driver, make_spec, provision

pytestmark = pytest.mark.real_services  # a real node agent over HTTP, running real processes


@dataclass
class Agent:
    url: str
    secret: str
    node: LocalDriver
    driver: AgentDriver

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    with local_driver(tmp_path / "node") as node:
        secret = secrets.token_urlsafe(32)
        url, stop = start_agent_in_thread(node, secret)
        driver = AgentDriver(url, secret)
        try:
            yield Agent(url, secret, node, driver)
        finally:
            driver.close()
            stop()


async def recv_until(ws: Any, wanted: Callable[[str], bool], timeout: float = 10.0) -> list[str]:
    """Receive lines until one satisfies `wanted`; all lines received so far. Fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"timed out; console lines so far: {seen}")
        try:
            line = await asyncio.wait_for(ws.recv(), remaining)
        except TimeoutError:
            pytest.fail(f"timed out; console lines so far: {seen}")
        seen.append(line)
        if wanted(line):
            return seen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- failing closed ------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", None, "   "])
def test_no_secret_refuses_to_start(tmp_path: Path, secret: Any) -> None:
    node = LocalDriver(tmp_path / "node")
    with pytest.raises(ValueError):
        create_agent_app(node, secret)
    with pytest.raises(ValueError):
        start_agent_in_thread(node, secret)
    with pytest.raises(ValueError):
        run_agent(node, secret, "127.0.0.1", _free_port())


def test_missing_or_wrong_credentials_are_401_and_nothing_is_done(agent: Agent) -> None:
    spec = make_spec()
    agent.driver.create_directory(spec)
    root = agent.node.instance_dir(spec)
    other = make_spec()
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {agent.secret}x"},
        {"Authorization": f"Bearer {agent.secret[:-1]}"},
        {"Authorization": agent.secret},
        {"Authorization": f"Basic {agent.secret}"},
        {"Authorization": "Bearer"},
    ]
    base = f"{agent.url}/v1/instances"
    with httpx.Client(trust_env=False, timeout=10) as http:
        for headers in bad_headers:
            requests = [
                http.get(f"{agent.url}/v1/health", headers=headers),
                http.put(f"{base}/{spec.instance_id}/files/content", params={"path": "evil.txt"}, content=b"x",
                         headers=headers),
                http.post(f"{base}/{other.instance_id}/port", headers=headers),
                http.put(f"{base}/{other.instance_id}/directory", headers=headers),
                http.delete(f"{base}/{spec.instance_id}/directory", headers=headers),
                http.get(f"{agent.url}/no/such/route", headers=headers),
                http.get(f"{agent.url}/docs", headers=headers),
            ]
            for response in requests:
                assert response.status_code == 401
                assert response.headers["content-type"] == "application/problem+json"
                body = response.json()
                assert body["code"] == "unauthorized"
                assert {"type", "title", "status", "detail"} <= set(body)
                assert agent.secret not in response.text
        assert http.get(f"{agent.url}/v1/health", headers=agent.headers()).json()["status"] == "ok"
    assert not (root / "evil.txt").exists()
    assert root.is_dir()
    assert not agent.node.instance_dir(other).exists()
    assert not (agent.node.runtime_dir(other) / "port").exists()


def test_a_driver_with_the_wrong_secret_gets_agent_unauthorized(agent: Agent) -> None:
    spec = make_spec()
    agent.driver.create_directory(spec)
    wrong_secret = secrets.token_urlsafe(32)
    wrong = AgentDriver(agent.url, wrong_secret)
    try:
        with pytest.raises(DriverError) as info:
            wrong.write_file(spec, "evil.txt", b"x")
    finally:
        wrong.close()
    assert info.value.code == "agent_unauthorized"
    assert wrong_secret not in str(info.value) and agent.secret not in str(info.value)
    assert not (agent.node.instance_dir(spec) / "evil.txt").exists()


# -- errors --------------------------------------------------------------------------------------


def test_driver_errors_are_problem_documents(tmp_path: Path) -> None:
    with local_driver(tmp_path / "node") as node:
        secret = secrets.token_urlsafe(32)
        url, stop = start_agent_in_thread(node, secret)
        try:
            spec = make_spec()
            node.create_directory(spec)
            base = f"{url}/v1/instances/{spec.instance_id}"
            auth = {"Authorization": f"Bearer {secret}"}
            with httpx.Client(trust_env=False, timeout=10, headers=auth) as http:
                cases = [
                    (http.get(f"{base}/files/content", params={"path": "nope"}), 404, "not_found"),
                    (http.get(f"{base}/files", params={"path": "../.."}), 400, "bad_path"),
                    (http.put(f"{base}/files/content", params={"path": "big"}, content=b"x" * (WRITE_LIMIT + 1)),
                     413, "too_large"),
                    (http.post(f"{base}/backups/{uuid4()}/restore", json={"sha256": "0" * 64}), 404, "not_found"),
                    (http.post(f"{base}/console", json={"line": "say hi"}), 409, "not_running"),
                    (http.post(f"{base}/process/wait", json={"port": 1, "timeout": 0.5}), 502, "process_exited"),
                    (http.put(f"{base}/process", json={"port": "not a port"}), 422, "validation_error"),
                    (http.get(f"{url}/v1/instances/not-a-uuid/files"), 422, "validation_error"),
                ]
                for response, status, code in cases:
                    assert response.status_code == status, response.text
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["code"] == code
                    assert response.json()["status"] == status
                    assert secret not in response.text
                manifest = http.put(f"{base}/backups/{uuid4()}").json()
                assert set(manifest) >= {"size", "sha256", "created_at", "path"}
                raw = http.get(f"{base}/files", params={"path": "/"})
                assert raw.json() == {"path": "/", "entries": []}
                assert not (node.instance_dir(spec) / "big").exists()
        finally:
            stop()


def test_file_content_moves_raw_bytes(agent: Agent) -> None:
    spec = make_spec()
    agent.driver.create_directory(spec)
    payload = bytes(range(256)) * 4
    with httpx.Client(trust_env=False, timeout=10, headers=agent.headers()) as http:
        url = f"{agent.url}/v1/instances/{spec.instance_id}/files/content"
        assert http.put(url, params={"path": "/bin/blob"}, content=payload).status_code == 204
        response = http.get(url, params={"path": "bin/blob"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == payload
    assert (agent.node.instance_dir(spec) / "bin" / "blob").read_bytes() == payload


def test_errors_never_contain_the_secret(agent: Agent, tmp_path: Path) -> None:
    spec = make_spec()
    port, _pid = provision(agent.driver, spec)
    backup_id = uuid4()
    agent.driver.create_backup(spec, backup_id)
    unreachable = AgentDriver(f"http://127.0.0.1:{_free_port()}", agent.secret)
    calls: list[Callable[[], Any]] = [
        lambda: agent.driver.read_file(spec, "../../etc/passwd"),
        lambda: agent.driver.read_file(spec, "missing"),
        lambda: agent.driver.remove_directory(spec),
        lambda: agent.driver.restore_backup(spec, backup_id, "0" * 64),
        lambda: agent.driver.send_console(spec, "a\nb"),
        lambda: agent.driver.wait_connectable(make_spec(), port, 0.5),
        lambda: unreachable.allocate_port(spec),
        lambda: unreachable.is_running(spec, port),
    ]
    codes = []
    try:
        for call in calls:
            with pytest.raises(DriverError) as info:
                call()
            codes.append(info.value.code)
            text = "".join(traceback.format_exception(info.value)) + repr(info.value) + info.value.message
            assert agent.secret not in text
    finally:
        unreachable.close()
    assert codes == ["bad_path", "not_found", "still_running", "still_running", "bad_command", "process_exited",
                     "agent_unreachable", "agent_unreachable"]
    assert agent.secret not in repr(agent.driver)
    assert agent.secret not in repr(agent.driver.console(spec))


def test_errors_never_name_the_agent_or_the_node(agent: Agent, tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    """What a customer reads (and an operation stores) has no agent address, host or node path; the log has."""
    spec = make_spec()
    port, _pid = provision(agent.driver, spec)
    dead_port = _free_port()
    unreachable = AgentDriver(f"http://127.0.0.1:{dead_port}", agent.secret)
    calls: list[Callable[[], Any]] = [
        lambda: agent.driver.wait_connectable(make_spec(), port, 0.5),  # process_exited, with a log tail
        lambda: agent.driver.restore_backup(spec, uuid4(), "0" * 64),
        lambda: unreachable.allocate_port(spec),
        lambda: asyncio.run(unreachable.console(spec, connect_timeout=2.0).__aenter__()),
    ]
    node_dir = str(agent.node.data_dir)
    try:
        for call in calls:
            with pytest.raises(DriverError) as info:
                call()
            shown = info.value.message
            for leak in (agent.url, str(dead_port), "127.0.0.1", node_dir, agent.secret):
                assert leak not in shown, (info.value.code, shown)
    finally:
        unreachable.close()
    assert str(dead_port) in caplog.text  # staff still find the address in the log


@pytest.mark.parametrize("path", ["/" + "n" * 256, "/d/" + "é" * 128, "/" + "a/" * 2048 + "b"])
def test_names_and_paths_too_long_are_bad_path_not_a_server_error(agent: Agent, path: str) -> None:
    spec = make_spec()
    agent.driver.create_directory(spec)
    for call in (lambda: agent.driver.list_files(spec, path), lambda: agent.driver.read_file(spec, path),
                 lambda: agent.driver.write_file(spec, path, b"x")):
        with pytest.raises(DriverError) as info:
            call()
        assert info.value.code == "bad_path", info.value.message
    with httpx.Client(trust_env=False, timeout=10, headers=agent.headers()) as http:
        r = http.get(f"{agent.url}/v1/instances/{spec.instance_id}/files", params={"path": path})
    assert r.status_code == 400 and r.json()["code"] == "bad_path"
    agent.driver.write_file(spec, "/" + "n" * 255, b"fits")
    assert agent.driver.read_file(spec, "/" + "n" * 255) == b"fits"


# -- console -------------------------------------------------------------------------------------


def test_console_websocket_round_trip(agent: Agent) -> None:
    spec = make_spec()
    provision(agent.driver, spec)

    async def session() -> None:
        async with agent.driver.console(spec) as ws:
            await recv_until(ws, lambda line: "listening on" in line)  # the log so far comes first
            await ws.send("say hello")
            await recv_until(ws, lambda line: line == "[server] hello")
            await ws.send("frobnicate\nsay again")
            await recv_until(ws, lambda line: line == "[server] again")

    asyncio.run(session())
    assert "[server] unknown command: frobnicate\n" in agent.driver.console_log(spec)


def test_console_websocket_starts_with_the_last_100_lines(agent: Agent) -> None:
    spec = make_spec()
    provision(agent.driver, spec)
    for n in range(150):
        agent.driver.send_console(spec, f"say line {n}")
    deadline = time.monotonic() + 10
    while "[server] line 149\n" not in agent.node.console_log(spec):
        assert time.monotonic() < deadline, "the stand-in did not log every line"
        time.sleep(0.02)

    async def session() -> list[str]:
        async with agent.driver.console(spec) as ws:
            return [await asyncio.wait_for(ws.recv(), 10) for _ in range(100)]

    lines = asyncio.run(session())
    assert lines == [f"[server] line {n}" for n in range(50, 150)]
    assert agent.driver.console_log(spec, lines=3) == "".join(f"[server] line {n}\n" for n in range(147, 150))


def test_console_commands_to_a_stopped_server_come_back_as_errors(agent: Agent) -> None:
    spec = make_spec()
    agent.driver.create_directory(spec)

    async def session() -> None:
        async with agent.driver.console(spec) as ws:
            await ws.send("say hello")
            await recv_until(ws, lambda line: line.startswith("[zlh] not_running:"))

    asyncio.run(session())


def test_console_websocket_rejects_a_wrong_secret(agent: Agent) -> None:
    spec = make_spec()
    provision(agent.driver, spec)
    url = agent.driver.console_url(spec)

    async def attempt(headers: dict[str, str]) -> int | None:
        async with connect(url, additional_headers=headers, proxy=None, open_timeout=10) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 10)
            return info.value.rcvd.code if info.value.rcvd else None

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {agent.secret}!"}):
        assert asyncio.run(attempt(headers)) == 4401

    wrong = AgentDriver(agent.url, "wrong-secret")

    async def through_the_driver() -> int | None:
        async with wrong.console(spec) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.send("say should not arrive")  # may already see the close
                await asyncio.wait_for(ws.recv(), 10)
            return info.value.rcvd.code if info.value.rcvd else None

    try:
        assert asyncio.run(through_the_driver()) == 4401
    finally:
        wrong.close()
    assert "should not arrive" not in agent.node.console_log(spec)


def test_console_connect_timeout_is_agent_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts TCP connections (backlog) but never answers the handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        driver = AgentDriver(f"http://127.0.0.1:{silent.getsockname()[1]}", "s3cret")
        spec: InstanceSpec = make_spec()

        async def session() -> None:
            async with driver.console(spec, connect_timeout=0.3):
                pass

        with pytest.raises(DriverError) as info:
            asyncio.run(session())
        driver.close()
    assert info.value.code == "agent_timeout"
    assert "s3cret" not in str(info.value)


def test_http_timeouts_are_agent_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        driver = AgentDriver(
            f"http://127.0.0.1:{silent.getsockname()[1]}", "s3cret", timeout=httpx.Timeout(0.3)
        )
        try:
            with pytest.raises(DriverError) as info:
                driver.list_files(make_spec(), "/")
        finally:
            driver.close()
    assert info.value.code == "agent_timeout"
