"""The node agent's HTTP API over a `LocalDriver`: `create_agent_app`, `run_agent`, `start_agent_in_thread`.

Every request, the health check and the console WebSocket included, must carry
`Authorization: Bearer <secret>` (compared in constant time). Otherwise: HTTP
401 with a problem document, or, for the WebSocket, accept-then-close with code
4401; either way the route never runs. There are no docs or OpenAPI routes.

Routes (instance steps take the `InstanceSpec` as path `instance_id` plus query
`kind` (`game`|`dev`, default `game`), `template`, `edge_name`):

| method and path | body | answer |
| --- | --- | --- |
| `GET /v1/health` | | 200 `{"status": "ok"}` |
| `POST /v1/instances/{id}/port` | | 200 `{"port"}` |
| `PUT /v1/instances/{id}/directory` | | 200 `{"path"}` |
| `DELETE /v1/instances/{id}/directory` | | 204 |
| `PUT /v1/instances/{id}/install` | `{"definition", "variables"}` | 200 `{"cache", "reused", "seconds"}` |
| `PUT /v1/instances/{id}/process` | `{"port", "definition", "variables"}` | 200 `{"pid"}` (start) |
| `GET /v1/instances/{id}/process?port=N` | | 200 `{"running"}` |
| `POST /v1/instances/{id}/process/wait` | `{"port", "timeout"}` | 204 |
| `DELETE /v1/instances/{id}/process?timeout=S` | | 204 (stop) |
| `POST /v1/instances/{id}/console` | `{"line"}` | 204 |
| `GET /v1/instances/{id}/console/log?lines=N` | | 200 `{"lines": [...]}` (the last N) |
| `WS /v1/instances/{id}/console` | text frames: commands | text frames: console lines |
| `GET /v1/instances/{id}/files?path=/` | | 200 `{"path", "entries"}` |
| `GET /v1/instances/{id}/files/content?path=P` | | 200, the raw bytes |
| `PUT /v1/instances/{id}/files/content?path=P` | the raw bytes | 204 |
| `PUT /v1/instances/{id}/files/directory?path=P` | | 204 (mkdir -p; `already_exists`: 409) |
| `DELETE /v1/instances/{id}/files/entry?path=P&directory=false` | | 204 (a file, or an empty directory) |
| `POST /v1/instances/{id}/files/rename` | `{"source", "target", "overwrite"}` | 204 |
| `PUT /v1/instances/{id}/backups/{backup_id}` | | 200 manifest (create, idempotent) |
| `POST /v1/instances/{id}/backups/{backup_id}/restore` | `{"sha256"}` | 204 |
| `DELETE /v1/backups/{backup_id}` | | 204 |
| `POST /v1/backups/{backup_id}/upload` | `{"part_size", "parts": [{"number", "url"}]}` | 200 `{"parts"}` (ETags) |
| `POST /v1/instances/{id}/backups/{backup_id}/restore-offsite` | `{"sha256", "url"}` | 204 |

The last two move an archive to and from offsite storage over URLs the control plane presigned
(`services.agent.offsite`): the agent holds no storage credentials.
| `GET /v1/instances/{id}/stats` | | 200 `{"current", "history", "disk_bytes", "limits", "last_exit", ...}` |
| `GET /v1/stats` | | 200 `{"items": {instance id: current sample}}` (every running server) |

`install` and `start` bodies may carry `limits` (`{"memory_mb", "cpus", "disk_bytes"}`): what the
instance may use, kept by the driver (`LocalDriver.set_limits`); the health check's `limits` says
whether the kernel enforces memory and CPU here (`enforced: …` or `not enforced: <reason>`).

`definition` is the template (its TOML document as JSON, `Template.from_dict` checks it again
here: a bad one is 422 `template_error`) and `variables` its resolved variables: the agent knows
no template of its own, so any template the control plane offers runs on any agent.

A `DriverError` becomes an RFC 9457 problem (`application/problem+json` with
`type`, `title`, `status`, `detail`, `code`) whose `code` is the driver's; the
status comes from `STATUS_BY_CODE` (502 for codes not listed). The console
socket first sends the last 100 lines of the console log, then follows it; each
text frame received is one or more commands (one per line); a command the
driver refuses comes back as a line `[zlh] CODE: MESSAGE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.templates import Template, TemplateError
from services.agent import files
from services.agent.driver import LocalDriver
from services.agent.stats import DEFAULT_INTERVAL
from services.ports import DriverError, InstanceSpec
from services.problem_documents import PROBLEM_JSON, problem_document

logger = logging.getLogger(__name__)

#: WebSocket close code for a missing or wrong secret (4000 + HTTP 401).
WS_UNAUTHORIZED = 4401
#: How many console lines a new console socket gets first.
CONSOLE_TAIL_LINES = 100
#: How often the console socket looks for new output, in seconds.
CONSOLE_POLL = 0.1
#: The most a single look reads from the console log.
CONSOLE_READ_CHUNK = 1024 * 1024

#: HTTP status for each driver error code; any other code is 502.
STATUS_BY_CODE: dict[str, int] = {
    "bad_path": 400,
    "bad_command": 400,
    "not_a_directory": 400,
    "is_a_directory": 400,
    "not_a_file": 400,
    "not_found": 404,
    "already_exists": 409,
    "not_empty": 409,
    "too_large": 413,
    "still_running": 409,
    "not_running": 409,
    "console_busy": 409,
    "checksum_mismatch": 422,
    "bad_archive": 422,
    "validation_error": 422,
    "template_error": 422,
    "unknown_template": 422,
    "not_installed": 409,
    "unauthorized": 401,
    "quota_exceeded": 409,
    "out_of_memory": 409,
}


def problem(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An RFC 9457 problem document with a stable `code`."""
    return JSONResponse(problem_document(status, code, detail), status_code=status, headers=headers,
                        media_type=PROBLEM_JSON)


def _check_secret(secret: str | None) -> bytes:
    if not isinstance(secret, str) or not secret.strip():
        raise ValueError("the node agent needs a non-empty secret; refusing to start without one")
    return secret.encode()


class BearerAuth:
    """Pure ASGI middleware: nothing reaches the app without `Authorization: Bearer <secret>`."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self._secret = _check_secret(secret)

    def authorized(self, scope: Scope) -> bool:
        """Whether the request's first `Authorization` header is `Bearer <secret>` (constant-time)."""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._secret)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": WS_UNAUTHORIZED, "reason": "unauthorized"})
            return
        response = problem(401, "unauthorized", "missing or wrong agent credentials", {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class LimitsBody(BaseModel):
    """What the instance may use (the control plane's figures: template defaults and the disk quota)."""

    memory_mb: int = Field(ge=0)
    cpus: float = Field(ge=0)
    disk_bytes: int = Field(ge=0)


class TemplateBody(BaseModel):
    """The template to run and its resolved variables (see the module docstring)."""

    definition: dict[str, Any]
    variables: dict[str, str | int | bool] = Field(default_factory=dict)
    limits: LimitsBody | None = None

    def apply(self, spec: InstanceSpec) -> InstanceSpec:
        """`spec` with this template; `template_error` if the definition is not a valid template."""
        try:
            definition = Template.from_dict(spec.template, self.definition)
        except TemplateError as exc:
            raise DriverError("template_error", exc.message) from exc
        return dataclasses.replace(spec, variables=dict(self.variables), definition=definition)


class StartBody(TemplateBody):
    port: int = Field(gt=0, lt=65536)


class WaitBody(BaseModel):
    port: int = Field(gt=0, lt=65536)
    timeout: float = Field(gt=0, le=600)


class CommandBody(BaseModel):
    line: str = Field(max_length=4095)


class RestoreBody(BaseModel):
    sha256: str = Field(min_length=1, max_length=128)


#: A presigned URL: http(s) only, so the agent is never made to read a file or another scheme.
PresignedUrl = Field(max_length=16_384, pattern=r"^https?://")


class PartUrl(BaseModel):
    number: int = Field(ge=1, le=10_000)
    url: str = PresignedUrl


class UploadBody(BaseModel):
    part_size: int = Field(gt=0, le=5 * 1024**3)
    parts: list[PartUrl] = Field(min_length=1, max_length=10_000)


class OffsiteRestoreBody(RestoreBody):
    url: str = PresignedUrl

class RenameBody(BaseModel):
    source: str = Field(max_length=files.MAX_PATH_BYTES)
    target: str = Field(max_length=files.MAX_PATH_BYTES)
    overwrite: bool = False


def spec_from_request(
    instance_id: UUID,
    kind: Literal["game", "dev"] = "game",
    template: str = Query("", max_length=200),
    edge_name: str = Query("", max_length=200),
) -> InstanceSpec:
    """The `InstanceSpec` of a request: path `instance_id`, query `kind`, `template`, `edge_name`."""
    return InstanceSpec(instance_id=instance_id, kind=kind, template=template, edge_name=edge_name)


def create_agent_app(driver: LocalDriver, secret: str) -> FastAPI:
    """The agent's ASGI app over `driver`; `ValueError` if `secret` is empty or missing (fail closed).

    Starts the driver's stats sampler, every `ZLH_AGENT_STATS_INTERVAL` s (5 by default);
    `app.state.sampler.stop()` ends it.
    """
    _check_secret(secret)
    app = FastAPI(title="ZLH node agent", docs_url=None, redoc_url=None, openapi_url=None)
    driver.sampler.interval = float(os.environ.get("ZLH_AGENT_STATS_INTERVAL") or DEFAULT_INTERVAL)
    app.state.sampler = driver.sampler.start()
    app.add_middleware(BearerAuth, secret=secret)
    _install_problems(app)
    Spec = Depends(spec_from_request)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "max_write_bytes": driver.max_write_bytes, "limits": driver.limits_status,
                "users": driver.users.status}

    @app.get("/v1/observe")
    def observe() -> dict[str, list[str]]:
        return driver.observe()

    @app.post("/v1/instances/{instance_id}/port")
    def allocate_port(spec: InstanceSpec = Spec) -> dict[str, int]:
        return {"port": driver.allocate_port(spec)}

    @app.put("/v1/instances/{instance_id}/directory")
    def create_directory(spec: InstanceSpec = Spec) -> dict[str, str]:
        return {"path": driver.create_directory(spec)}

    @app.delete("/v1/instances/{instance_id}/directory", status_code=204)
    def remove_directory(spec: InstanceSpec = Spec) -> None:
        driver.remove_directory(spec)

    @app.put("/v1/instances/{instance_id}/install")
    def install(body: TemplateBody, spec: InstanceSpec = Spec) -> dict[str, Any]:
        spec = body.apply(spec)
        result = driver.install(spec)
        if body.limits is not None:
            driver.set_limits(spec, body.limits.model_dump())
        return result

    @app.put("/v1/instances/{instance_id}/process")
    def start_process(body: StartBody, spec: InstanceSpec = Spec) -> dict[str, int]:
        spec = body.apply(spec)
        if body.limits is not None:
            driver.set_limits(spec, body.limits.model_dump())
        return {"pid": driver.start_process(spec, body.port)}

    @app.get("/v1/instances/{instance_id}/process")
    def is_running(port: int = Query(gt=0, lt=65536), spec: InstanceSpec = Spec) -> dict[str, bool]:
        return {"running": driver.is_running(spec, port)}

    @app.post("/v1/instances/{instance_id}/process/wait", status_code=204)
    def wait_connectable(body: WaitBody, spec: InstanceSpec = Spec) -> None:
        driver.wait_connectable(spec, body.port, body.timeout)

    @app.delete("/v1/instances/{instance_id}/process", status_code=204)
    def stop_process(timeout: float = Query(10.0, gt=0, le=600), spec: InstanceSpec = Spec) -> None:
        driver.stop_process(spec, timeout)

    @app.post("/v1/instances/{instance_id}/console", status_code=204)
    def send_console(body: CommandBody, spec: InstanceSpec = Spec) -> None:
        driver.send_console(spec, body.line)

    @app.get("/v1/instances/{instance_id}/console/log")
    def console_log(
        lines: int = Query(CONSOLE_TAIL_LINES, ge=1, le=10_000), spec: InstanceSpec = Spec
    ) -> dict[str, list[str]]:
        tail, _offset, _partial = _read_tail(driver.console_log_path(spec), lines)
        return {"lines": tail}

    @app.websocket("/v1/instances/{instance_id}/console")
    async def console(websocket: WebSocket, instance_id: UUID, kind: Literal["game", "dev"] = "game") -> None:
        spec = InstanceSpec(instance_id=instance_id, kind=kind, template="", edge_name="")
        await websocket.accept()
        await _serve_console(websocket, driver, spec)

    @app.get("/v1/instances/{instance_id}/files")
    def list_files(path: str = "/", spec: InstanceSpec = Spec) -> dict[str, Any]:
        entries = driver.list_files(spec, path)
        return {"path": files.display(files.normalize(path)), "entries": entries}

    @app.get("/v1/instances/{instance_id}/files/content")
    def read_file(path: str, spec: InstanceSpec = Spec) -> Response:
        return Response(driver.read_file(spec, path), media_type="application/octet-stream")

    @app.put("/v1/instances/{instance_id}/files/content", status_code=204)
    async def write_file(request: Request, path: str, spec: InstanceSpec = Spec) -> None:
        limit = driver.max_write_bytes
        body = bytearray()
        received = 0
        # Read the whole body even when it is too large, so the client sees the 413 rather than a reset.
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                body += chunk
        if received > limit:
            raise DriverError("too_large", f"a file may hold at most {limit} bytes, got {received}")
        await run_in_threadpool(driver.write_file, spec, path, bytes(body))

    @app.put("/v1/instances/{instance_id}/files/directory", status_code=204)
    def make_directory(path: str, spec: InstanceSpec = Spec) -> None:
        driver.make_directory(spec, path)

    @app.delete("/v1/instances/{instance_id}/files/entry", status_code=204)
    def delete_path(path: str, directory: bool = False, spec: InstanceSpec = Spec) -> None:
        driver.delete_path(spec, path, directory)

    @app.post("/v1/instances/{instance_id}/files/rename", status_code=204)
    def rename_path(body: RenameBody, spec: InstanceSpec = Spec) -> None:
        driver.rename_path(spec, body.source, body.target, body.overwrite)

    @app.put("/v1/instances/{instance_id}/backups/{backup_id}")
    def create_backup(backup_id: UUID, spec: InstanceSpec = Spec) -> dict[str, Any]:
        return driver.create_backup(spec, backup_id)

    @app.post("/v1/instances/{instance_id}/backups/{backup_id}/restore", status_code=204)
    def restore_backup(backup_id: UUID, body: RestoreBody, spec: InstanceSpec = Spec) -> None:
        driver.restore_backup(spec, backup_id, body.sha256)

    @app.get("/v1/instances/{instance_id}/stats")
    def stats(spec: InstanceSpec = Spec) -> dict[str, Any]:
        return driver.stats(spec)

    @app.get("/v1/stats")
    def all_stats() -> dict[str, Any]:
        return {"items": driver.node_stats()}

    @app.delete("/v1/backups/{backup_id}", status_code=204)
    def delete_backup(backup_id: UUID) -> None:
        driver.delete_backup(backup_id)

    @app.get("/v1/backups/{backup_id}/archive")
    def fetch_backup(backup_id: UUID) -> Response:
        """The archive's bytes, for moving a server to another node."""
        return Response(driver.fetch_backup(backup_id), media_type="application/gzip")

    @app.put("/v1/backups/{backup_id}/archive", status_code=204)
    async def store_backup(request: Request, backup_id: UUID, sha256: str = Query(pattern="^[0-9a-fA-F]{64}$")
                           ) -> None:
        """Keep an archive made on another node (a server moving here), checked against `sha256`."""
        data = await request.body()
        await run_in_threadpool(driver.store_backup, backup_id, data, sha256)

    @app.post("/v1/backups/{backup_id}/upload")
    def upload_backup(backup_id: UUID, body: UploadBody) -> dict[str, Any]:
        return {"parts": driver.upload_backup(backup_id, [p.model_dump() for p in body.parts], body.part_size)}

    @app.post("/v1/instances/{instance_id}/backups/{backup_id}/restore-offsite", status_code=204)
    def restore_offsite_backup(backup_id: UUID, body: OffsiteRestoreBody, spec: InstanceSpec = Spec) -> None:
        driver.restore_offsite_backup(spec, backup_id, body.sha256, body.url)

    return app


def _install_problems(app: FastAPI) -> None:
    @app.exception_handler(DriverError)
    async def _driver_error(_: Request, exc: DriverError) -> JSONResponse:
        return problem(STATUS_BY_CODE.get(exc.code, 502), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = next(iter(exc.errors()), {"loc": (), "msg": "invalid request"})
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
        return problem(422, "validation_error", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "no_such_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem(exc.status_code, code, detail)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("agent: unexpected error")
        return problem(500, "agent_internal", "unexpected error in the node agent; see its log")


# -- console ------------------------------------------------------------------------------------


def _read_tail(path: Path, lines: int) -> tuple[list[str], tuple[int, int], bytes]:
    """The last `lines` complete lines of `path`, `(inode, offset read up to)`, and the partial last line."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            start = max(0, st.st_size - CONSOLE_READ_CHUNK)
            f.seek(start)
            data = f.read(st.st_size - start)
    except FileNotFoundError:
        return [], (0, 0), b""
    if start > 0:
        data = data.partition(b"\n")[2]  # drop the cut first line
    *complete, partial = data.split(b"\n")
    text = [line.decode("utf-8", "replace") for line in complete[-lines:]]
    return text, (st.st_ino, st.st_size), partial


async def _follow_console(websocket: WebSocket, path: Path, send_lock: asyncio.Lock) -> None:
    """Send the last lines of `path`, then every line appended to it; survives the file being recreated."""
    tail, (inode, offset), partial = await asyncio.to_thread(_read_tail, path, CONSOLE_TAIL_LINES)
    offset = offset if inode else 0
    for line in tail:
        async with send_lock:
            await websocket.send_text(line)
    while True:
        await asyncio.sleep(CONSOLE_POLL)  # the polling interval of a file tail
        chunk, inode, offset, reset = await asyncio.to_thread(_read_more, path, inode, offset)
        if reset:
            partial = b""
        if not chunk:
            continue
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            async with send_lock:
                await websocket.send_text(raw.decode("utf-8", "replace"))


def _read_more(path: Path, inode: int, offset: int) -> tuple[bytes, int, int, bool]:
    """New bytes of `path` after `offset`: `(data, inode, new offset, whether it was recreated/truncated)`."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            reset = st.st_ino != inode or st.st_size < offset
            if reset:
                offset = 0
            f.seek(offset)
            data = f.read(CONSOLE_READ_CHUNK)
            return data, st.st_ino, offset + len(data), reset
    except FileNotFoundError:
        return b"", 0, 0, inode != 0


async def _serve_console(websocket: WebSocket, driver: LocalDriver, spec: InstanceSpec) -> None:
    """Follow the log and run commands until the client leaves; if following fails, close with 1011."""
    send_lock = asyncio.Lock()

    async def commands() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
                for line in text.splitlines():
                    try:
                        await run_in_threadpool(driver.send_console, spec, line)
                    except DriverError as exc:
                        async with send_lock:
                            await websocket.send_text(f"[zlh] {exc.code}: {exc.message}")

    follower = asyncio.create_task(_follow_console(websocket, driver.console_log_path(spec), send_lock))
    runner = asyncio.create_task(commands())
    try:
        await asyncio.wait({follower, runner}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (follower, runner):
            task.cancel()
        results = await asyncio.gather(follower, runner, return_exceptions=True)
    failure = results[0]
    if runner.done() and not runner.cancelled() and runner.exception() is None:
        return  # the client left
    if isinstance(failure, BaseException) and not isinstance(failure, asyncio.CancelledError | WebSocketDisconnect):
        logger.warning("agent: console of %s failed: %r", spec.instance_id, failure)
        with contextlib.suppress(Exception):
            await websocket.close(code=1011, reason="console follow failed")


# -- running it ---------------------------------------------------------------------------------


def _uvicorn_config(app: FastAPI, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(app, ws="websockets-sansio", lifespan="off", **kwargs)


def run_agent(driver: LocalDriver, secret: str, host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve the agent with uvicorn until interrupted (the `zlh agent` process); fails closed without a secret."""
    app = create_agent_app(driver, secret)
    (logger.info if driver.cgroups is not None else logger.warning)("agent: kernel limits %s", driver.limits_status)
    logger.info("agent: instance users: %s", driver.users.status)
    uvicorn.Server(_uvicorn_config(app, host=host, port=port, log_level="info")).run()


def start_agent_in_thread(
    driver: LocalDriver, secret: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0
) -> tuple[str, Callable[[], None]]:
    """Serve the agent in a daemon thread; return `(base URL, stop)` once it answers.

    `port=0` picks a free port. `stop()` shuts the server down and waits for the thread.
    """
    app = create_agent_app(driver, secret)
    (logger.info if driver.cgroups is not None else logger.warning)("agent: kernel limits %s", driver.limits_status)
    logger.info("agent: instance users: %s", driver.users.status)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    bound_port = sock.getsockname()[1]
    url = f"http://[{host}]:{bound_port}" if family == socket.AF_INET6 else f"http://{host}:{bound_port}"
    # No log_config/log_level: uvicorn would reconfigure the process's (shared) uvicorn loggers.
    server = uvicorn.Server(_uvicorn_config(app, log_config=None))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"zlh-agent-{bound_port}", daemon=True
    )

    def stop() -> None:
        app.state.sampler.stop()
        server.should_exit = True
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=15.0)
        sock.close()

    thread.start()
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if not thread.is_alive():
                stop()
                raise RuntimeError("the node agent exited during start-up")
            if server.started:
                try:
                    if client.get(f"{url}/v1/health", headers=headers).status_code == 200:
                        return url, stop
                except httpx.HTTPError:
                    pass
            if time.monotonic() >= deadline:
                stop()
                raise RuntimeError(f"the node agent did not answer on {url} within {timeout}s")
            time.sleep(0.01)  # start-up polling interval, bounded by the deadline
