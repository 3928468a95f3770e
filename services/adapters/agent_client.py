"""`AgentDriver`: the control plane's `InstanceDriver` that runs node steps through a node agent.

Node steps (ports, directories, processes, console, files, backups) are HTTP
calls to the agent (`services.agent.server`) with `Authorization:
Bearer <secret>`; the agent's problem documents come back as
`DriverError(code, detail)`, an unreachable agent as `agent_unreachable`, a
timed-out call as `agent_timeout`, rejected credentials as `agent_unauthorized`,
anything else unexpected as `agent_error`. The edge (DNS and the proxy) is not the
node's business: the control plane publishes it (`services.edge`).

`console(spec)` opens the agent's console WebSocket for the API to relay a
browser's console to. The secret is only ever sent in the header: it is not in
any error message, log line or `repr`.

Error messages are for customers (the API shows them; an operation stores them):
they never name the agent's address, a host or a path on the node. For the codes
in `CUSTOMER_CODES` the agent's message (about the customer's own paths and server)
is kept; every other code gets a fixed message from `NODE_MESSAGES`, and the
agent's own words go to this process's log, with its address, for staff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit
from uuid import UUID

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI

from services.ports import DriverError, InstanceSpec, spec_address

log = logging.getLogger(__name__)

#: Codes about what the customer asked for: the agent's message is shown as it is.
CUSTOMER_CODES = frozenset({
    "bad_path", "bad_command", "is_a_directory", "not_a_directory", "not_a_file", "not_found", "too_large",
    "still_running", "not_running", "console_busy", "quota_exceeded", "checksum_mismatch", "validation_error",
    "unknown_template", "out_of_memory", "already_exists", "not_empty",
})
#: What a customer reads for a failure of the node itself (the log has the agent's own message).
NODE_MESSAGES = {
    "agent_timeout": "the node agent did not answer in time",
    "agent_unreachable": "the node agent cannot be reached",
    "agent_unauthorized": "the node agent refused the control plane's credentials",
    "agent_error": "the node agent gave an unexpected answer",
    "agent_internal": "unexpected error in the node agent",
    "io_error": "the node could not read or write the server's files",
    "spawn_failed": "the node could not start the server's process",
    "process_exited": "the server's process exited while starting; its console shows why",
    "not_connectable": "the server did not accept connections in time",
    "stop_failed": "the node could not stop the server's process",
    "backup_failed": "the node could not archive the server's files",
    "bad_archive": "the backup archive cannot be extracted",
    "offsite_failed": "the node could not move the backup to or from offsite storage",
    "no_free_port": "the node has no free port for the server",
    "install_failed": "the node could not install the server's software; the operator can see why in the node's log",
    "not_installed": "the server's software is not installed on its node yet",
    "template_error": "the server's template could not be used on its node",
    "limits_failed": "the node could not set the server's memory and CPU limits",
}
#: The disk an instance's files may use when neither its template nor the operator says less
#: (`ZLH_INSTANCE_DISK_QUOTA`).
DEFAULT_DISK_QUOTA = 10 * 1024 * 1024 * 1024
#: How long a stats call may take: the API answers without figures rather than wait.
STATS_TIMEOUT = httpx.Timeout(3.0, connect=2.0)


def node_error(code: str, detail: str, where: str) -> DriverError:
    """The `DriverError` for a failure the agent at `where` reported (or we saw) as `code`, `detail`.

    Customer codes keep their message (with `where` scrubbed from it, should it appear); any other
    code gets its fixed message, and `detail` is logged for staff.
    """
    if code in CUSTOMER_CODES:
        return DriverError(code, scrub(detail, where))
    log.warning("node agent %s: %s: %s", where, code, detail)
    return DriverError(code, NODE_MESSAGES.get(code, f"the node agent failed ({code})"))


def scrub(message: str, where: str) -> str:
    """`message` without the agent's URL or host."""
    host = urlsplit(where).hostname or ""
    for secret_ish in filter(None, (where, where.rstrip("/"), host)):
        message = message.replace(secret_ish, "the node agent")
    return message


#: Seconds allowed on top of a step's own timeout (wait, stop) for the HTTP round trip.
SLACK = 15.0
#: How long an install may take (npm and pip on a slow node, native modules compiled).
INSTALL_TIMEOUT = 3600.0
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class AgentDriver:
    """`InstanceDriver` over a node agent's HTTP API; see the module docstring."""

    def __init__(
        self,
        agent_url: str,
        secret: str,
        host: str = "127.0.0.1",
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        disk_quota: int = DEFAULT_DISK_QUOTA,
    ) -> None:
        if not secret:
            raise ValueError("AgentDriver needs the node agent's secret")
        self.agent_url = agent_url.rstrip("/")
        self.host = host
        self.disk_quota = disk_quota
        self._auth = {"Authorization": f"Bearer {secret}"}
        self._http = httpx.Client(base_url=self.agent_url, headers=self._auth, timeout=timeout, trust_env=False)

    def __repr__(self) -> str:
        return f"AgentDriver({self.agent_url!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    # -- HTTP plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _params(spec: InstanceSpec, **extra: Any) -> dict[str, Any]:
        return {"kind": spec.kind, "template": spec.template, "edge_name": spec.edge_name, **extra}

    @staticmethod
    def _path(spec: InstanceSpec, suffix: str = "") -> str:
        return f"/v1/instances/{spec.instance_id}{suffix}"

    def _call(self, method: str, url: str, *, read_timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """One request; any non-2xx answer or transport failure becomes a `DriverError`."""
        if read_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(read_timeout, connect=DEFAULT_TIMEOUT.connect)
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise node_error("agent_timeout", f"{method} {url}: {type(exc).__name__}", self.agent_url) from exc
        except httpx.TransportError as exc:
            raise node_error("agent_unreachable", f"{method} {url}: {type(exc).__name__}: {exc}",
                             self.agent_url) from exc
        if response.is_success:
            return response
        raise self._error(response)

    def _error(self, response: httpx.Response) -> DriverError:
        where = f"{response.request.method} {response.request.url.path}"
        if response.status_code == 401:
            return node_error("agent_unauthorized", f"{where}: HTTP 401", self.agent_url)
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            detail = str(body.get("detail") or body.get("title") or body["code"])
            return node_error(body["code"], detail, self.agent_url)
        return node_error("agent_error", f"{where}: HTTP {response.status_code}", self.agent_url)

    # -- InstanceDriver: node steps ----------------------------------------------------------------

    def public_host(self, spec: InstanceSpec) -> str:
        return self.host

    def address(self, spec: InstanceSpec, port: int) -> str:
        return spec_address(spec, self.host, port)

    def observe(self) -> dict[str, list[str]]:
        body = self._call("GET", "/v1/observe").json()
        return {"processes": list(body["processes"]), "directories": list(body["directories"])}

    def allocate_port(self, spec: InstanceSpec) -> int:
        return int(self._call("POST", self._path(spec, "/port"), params=self._params(spec)).json()["port"])

    def create_directory(self, spec: InstanceSpec) -> str:
        return str(self._call("PUT", self._path(spec, "/directory"), params=self._params(spec)).json()["path"])

    def _template(self, spec: InstanceSpec) -> dict[str, Any]:
        """The template, its variables and the instance's limits, as the agent takes them; `unknown_template`
        without one."""
        if spec.definition is None:
            raise DriverError("unknown_template", f"template {spec.template!r} is not offered (any more)")
        return {"definition": dict(spec.definition.source), "variables": dict(spec.variables),
                "limits": instance_limits(spec, self.disk_quota)}

    def install(self, spec: InstanceSpec) -> dict[str, Any]:
        response = self._call("PUT", self._path(spec, "/install"), params=self._params(spec),
                              json=self._template(spec), read_timeout=INSTALL_TIMEOUT)
        return dict(response.json())

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        response = self._call(
            "PUT", self._path(spec, "/process"), params=self._params(spec),
            json={"port": port, **self._template(spec)}, read_timeout=120.0,
        )
        return int(response.json()["pid"])

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        self._call(
            "POST",
            self._path(spec, "/process/wait"),
            params=self._params(spec),
            json={"port": port, "timeout": timeout},
            read_timeout=timeout + SLACK,
        )

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        response = self._call("GET", self._path(spec, "/process"), params=self._params(spec, port=port))
        return bool(response.json()["running"])

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        # The agent may wait the grace twice (stop command, then SIGTERM), then for SIGKILL.
        grace = max(timeout, spec.definition.stop.timeout if spec.definition is not None else 0.0)
        self._call(
            "DELETE",
            self._path(spec, "/process"),
            params=self._params(spec, timeout=timeout),
            read_timeout=2 * grace + 5.0 + SLACK,
        )

    def remove_directory(self, spec: InstanceSpec) -> None:
        self._call("DELETE", self._path(spec, "/directory"), params=self._params(spec))

    def send_console(self, spec: InstanceSpec, line: str) -> None:
        self._call("POST", self._path(spec, "/console"), params=self._params(spec), json={"line": line})

    def console_log(self, spec: InstanceSpec, lines: int = 100) -> str:
        """The last `lines` console lines, newline-terminated (like `LocalDriver.console_log`)."""
        response = self._call("GET", self._path(spec, "/console/log"), params=self._params(spec, lines=lines))
        return "".join(line + "\n" for line in response.json()["lines"])

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        response = self._call("GET", self._path(spec, "/files"), params=self._params(spec, path=path))
        return list(response.json()["entries"])

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        return self._call("GET", self._path(spec, "/files/content"), params=self._params(spec, path=path)).content

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        self._call(
            "PUT",
            self._path(spec, "/files/content"),
            params=self._params(spec, path=path),
            content=bytes(content),
            headers={"Content-Type": "application/octet-stream"},
        )

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        self._call("PUT", self._path(spec, "/files/directory"), params=self._params(spec, path=path))

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        self._call("DELETE", self._path(spec, "/files/entry"),
                   params=self._params(spec, path=path, directory=str(directory).lower()))

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        self._call("POST", self._path(spec, "/files/rename"), params=self._params(spec),
                   json={"source": source, "target": target, "overwrite": overwrite})

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict[str, Any]:
        response = self._call(
            "PUT", self._path(spec, f"/backups/{backup_id}"), params=self._params(spec), read_timeout=3600.0
        )
        return dict(response.json())

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        self._call(
            "POST",
            self._path(spec, f"/backups/{backup_id}/restore"),
            params=self._params(spec),
            json={"sha256": sha256},
            read_timeout=3600.0,
        )

    def delete_backup(self, backup_id: UUID) -> None:
        self._call("DELETE", f"/v1/backups/{backup_id}")

    def fetch_backup(self, backup_id: UUID) -> bytes:
        """A backup archive's bytes (moving a server off this node)."""
        return self._call("GET", f"/v1/backups/{backup_id}/archive", read_timeout=INSTALL_TIMEOUT).content

    def store_backup(self, backup_id: UUID, data: bytes, sha256: str) -> None:
        """Hand this node an archive made on another one (moving a server here)."""
        self._call("PUT", f"/v1/backups/{backup_id}/archive", params={"sha256": sha256}, content=data,
                   read_timeout=INSTALL_TIMEOUT)

    def upload_backup(self, backup_id: UUID, parts: list[dict[str, Any]], part_size: int) -> list[dict[str, Any]]:
        response = self._call("POST", f"/v1/backups/{backup_id}/upload", json={"part_size": part_size,
                              "parts": parts}, read_timeout=3600.0)
        return list(response.json()["parts"])

    def restore_offsite_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str, url: str) -> None:
        self._call("POST", self._path(spec, f"/backups/{backup_id}/restore-offsite"), params=self._params(spec),
                   json={"sha256": sha256, "url": url}, read_timeout=3600.0)

    def stats(self, spec: InstanceSpec) -> dict[str, Any]:
        """`{"current", "history", "disk_bytes", "limits", "limits_enforced", "last_exit"}` of the instance."""
        response = self._call("GET", self._path(spec, "/stats"), params=self._params(spec), timeout=STATS_TIMEOUT)
        return dict(response.json())

    def node_stats(self) -> dict[str, dict[str, Any]]:
        """Instance id -> the latest sample of every running server on the node."""
        return dict(self._call("GET", "/v1/stats", timeout=STATS_TIMEOUT).json()["items"])

    def health(self) -> dict[str, Any]:
        """The agent's health document; `DriverError` if it is unreachable or rejects us."""
        return dict(self._call("GET", "/v1/health").json())

    # -- console WebSocket --------------------------------------------------------------------------

    def console_url(self, spec: InstanceSpec) -> str:
        """The agent's console WebSocket URL for `spec` (no credentials in it)."""
        base = self.agent_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/v1/instances/{spec.instance_id}/console?kind={quote(spec.kind)}"

    def console(self, spec: InstanceSpec, connect_timeout: float = 10.0) -> AgentConsole:
        """The console socket: `async with driver.console(spec) as ws` (`await` works too).

        `ws` is a connected `websockets` client connection: `await ws.recv()` gives console
        lines (the last 100 first), `await ws.send(command)` runs a command. Connecting takes
        at most `connect_timeout` s (`agent_timeout`); a wrong secret shows as the socket
        closing with code 4401.
        """
        return AgentConsole(self.console_url(spec), self._auth, connect_timeout, self.agent_url)


class AgentConsole:
    """Connects to the agent's console WebSocket on enter (or await) and closes it on exit."""

    def __init__(self, url: str, headers: dict[str, str], connect_timeout: float, agent_url: str) -> None:
        self._url = url
        self._headers = headers
        self._timeout = connect_timeout
        self._agent_url = agent_url
        self._ws: ClientConnection | None = None

    def __repr__(self) -> str:
        return f"AgentConsole({self._url!r})"

    async def _connect(self) -> ClientConnection:
        try:
            async with asyncio.timeout(self._timeout):
                self._ws = await connect(
                    self._url, additional_headers=self._headers, open_timeout=None, proxy=None, max_size=2**20
                )
        except TimeoutError as exc:
            raise node_error("agent_timeout", "console: no answer in time", self._agent_url) from exc
        except (OSError, InvalidURI) as exc:
            raise node_error("agent_unreachable", f"console: {type(exc).__name__}: {exc}", self._agent_url) from exc
        except InvalidHandshake as exc:
            raise node_error("agent_error", f"console refused: {type(exc).__name__}: {exc}", self._agent_url) from exc
        return self._ws

    def __await__(self) -> Any:
        return self._connect().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self._connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()


def instance_limits(spec: InstanceSpec, disk_quota: int) -> dict[str, Any]:
    """What the instance may use: its template's memory and CPUs, and its disk (the template's figure, at most
    `disk_quota`)."""
    assert spec.definition is not None
    r = spec.definition.resources
    return {"memory_mb": r.memory_mb, "cpus": r.cpus, "disk_bytes": min(r.disk_mb * 1024 * 1024, disk_quota)}
