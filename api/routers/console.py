"""The console: a single-use ticket, then a WebSocket relayed to the node agent.

Every way the relay can end closes the browser's socket with a clear code and
reason, so a client never hangs at "connecting":
4401 bad or expired ticket, 4403 the ticket's user may no longer use this console (removed as a
subuser, or the `console` permission taken away: checked when the socket opens, before each command
and every 2 s),
4409 the server is not running, 4504 the node agent did not answer within 10 s, 4410 the server
stopped, 1011 the agent failed.
Idle sockets are pinged by uvicorn (WebSocket ping every 20 s).

Every command line is recorded, with the ticket's user, in the instance's activity before it is sent
(services/activity.py); a line that cannot be recorded is not sent (the socket closes with 1011).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import ContainerDep, UserDep
from api.problems import Problem
from api.server_access import ConsoleGrant
from domain.errors import DomainError
from domain.lifecycle import InstanceStatus
from services.activity import record_console_command
from services.console import Ticket
from services.lifecycle import NotFoundError
from services.ports import DriverError, InstanceSpec
from services.server_access import CONSOLE, authorize

router = APIRouter(prefix="/api/instances", tags=["console"])

CONNECT_TIMEOUT = 10.0
STATUS_CHECK_INTERVAL = 2.0


class ConsoleTicket(BaseModel):
    url: str
    expires_at: str


@router.post("/{instance_id}/console", status_code=201, response_model=ConsoleTicket)
async def open_console(instance_id: UUID, request: Request, user: UserDep, grant: ConsoleGrant,
                       container: ContainerDep) -> ConsoleTicket:
    instance = grant.instance
    if instance.status is not InstanceStatus.RUNNING:
        raise Problem(409, "instance_not_running", f"the console needs a running server; this one is {instance.status}")
    token, ticket = container.console_tickets.issue(instance_id, user.id, admin=user.admin)
    scheme = "wss" if request.url.scheme == "https" else "ws"
    url = f"{scheme}://{request.url.netloc}/api/instances/{instance_id}/console/ws?ticket={token}"
    expires = datetime.fromtimestamp(ticket.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ConsoleTicket(url=url, expires_at=expires)


@router.websocket("/{instance_id}/console/ws")
async def console_socket(websocket: WebSocket, instance_id: UUID, ticket: str = "") -> None:
    container = websocket.app.state.container
    await websocket.accept()
    redeemed = container.console_tickets.redeem(ticket, instance_id)
    if redeemed is None:
        await websocket.close(code=4401, reason="invalid, used or expired console ticket")
        return
    try:
        instance = (await run_in_threadpool(_allowed, container, redeemed)).instance
    except NotFoundError:
        await websocket.close(code=4404, reason="no such instance")
        return
    except DomainError:
        await websocket.close(code=4403, reason="you may not use this server's console")
        return
    if instance.status is not InstanceStatus.RUNNING:
        await websocket.close(code=4409, reason="the server is not running")
        return
    spec = InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)
    code, reason = await _connect_and_relay(websocket, container.driver.console, spec, container, redeemed)
    with contextlib.suppress(Exception):
        await websocket.close(code=code, reason=reason)


def _allowed(container: Any, ticket: Ticket) -> Any:
    """The ticket's user's grant on its server, checked again (they may have lost the console since)."""
    return authorize(container.app, ticket.user_id, ticket.admin, ticket.instance_id, CONSOLE)


async def _connect_and_relay(websocket: WebSocket, opener: Any, spec: InstanceSpec, container: Any,
                             ticket: Ticket) -> tuple[int, str]:
    """Connect to the agent's console within CONNECT_TIMEOUT (enforced here too), then relay."""
    session = opener(spec, connect_timeout=CONNECT_TIMEOUT)
    try:
        upstream = await asyncio.wait_for(session.__aenter__(), CONNECT_TIMEOUT)
    except TimeoutError:
        return 4504, f"the node agent did not answer within {CONNECT_TIMEOUT:g} s"
    except DriverError as exc:
        if exc.code == "agent_timeout":
            return 4504, f"the node agent did not answer within {CONNECT_TIMEOUT:g} s"
        return 1011, f"console unavailable: {exc.code}"
    try:
        return await _relay(websocket, upstream, container, ticket)
    except Exception:
        return 1011, "console relay failed"
    finally:
        with contextlib.suppress(Exception):
            await session.__aexit__(None, None, None)


async def _relay(websocket: WebSocket, upstream: Any, container: Any, ticket: Ticket) -> tuple[int, str]:
    instance_id, user_id = ticket.instance_id, ticket.user_id

    async def downstream() -> tuple[int, str]:
        async for message in upstream:
            await websocket.send_text(message if isinstance(message, str) else message.decode(errors="replace"))
        return 4410, "the server stopped"

    async def commands() -> tuple[int, str]:
        try:
            while True:
                line = await websocket.receive_text()
                try:  # each line is checked: a console taken away a moment ago sends nothing more
                    await run_in_threadpool(_allowed, container, ticket)
                except DomainError:
                    return 4403, "you may no longer use this server's console"
                await run_in_threadpool(record_console_command, container.app, instance_id, user_id, line)
                await upstream.send(line)
        except WebSocketDisconnect:
            return 1000, "client closed"

    async def watch_status() -> tuple[int, str]:
        while True:
            await asyncio.sleep(STATUS_CHECK_INTERVAL)  # a periodic check, not synchronisation
            try:
                instance = (await run_in_threadpool(_allowed, container, ticket)).instance
            except DomainError:
                return 4403, "you may no longer use this server's console"
            if instance.status is not InstanceStatus.RUNNING:
                return 4410, "the server stopped"

    tasks = [asyncio.create_task(c()) for c in (downstream, commands, watch_status)]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    result = next(iter(done))
    if result.exception() is not None:
        return 1011, "the node agent closed the console"
    return result.result()
