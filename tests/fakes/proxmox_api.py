"""`FakeProxmox`: the part of the Proxmox VE API an LXC driver uses, as an ASGI app for `proxmoxer`.

Served at `/api2/json` over HTTPS (proxmoxer only speaks HTTPS: serve it with a `trustme`
certificate and pass the CA file as `verify_ssl`). Every answer is `{"data": ...}`.

Routes: `GET /version`, `GET /nodes`, `GET /cluster/resources[?type=vm|node]`,
`GET|POST /nodes/{node}/lxc`, `GET|PUT /nodes/{node}/lxc/{vmid}/config`,
`GET /nodes/{node}/lxc/{vmid}/status/current`, `POST .../status/start|shutdown|stop`,
`DELETE /nodes/{node}/lxc/{vmid}` (`purge`, `destroy-unreferenced-disks`, `force`),
`GET /nodes/{node}/lxc/{vmid}/interfaces`, `GET /nodes/{node}/tasks/{upid}/status` and `.../log`.

Behaviour modelled on PVE 8:
- auth is an API token only: `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`, else 401;
- parameters arrive form-encoded (as proxmoxer sends them) or as JSON; booleans accept
  `1|0|true|false|yes|no|on|off`; a bad or missing parameter is 400 with `{"errors": {param: msg}}`;
- semantic failures are 500 with the message PVE puts in the status line (here in the body's
  `message`, as ASGI cannot set a reason phrase), e.g. `CT 105 already exists on node 'pve'`,
  `Configuration file 'nodes/pve/lxc/105.conf' does not exist`, `CT is locked (create)`,
  `CT 105 is running - destroy failed`, `CT 105 already running`, `CT 105 not running`;
- create, start, shutdown, stop and destroy return a UPID
  `UPID:node:PID:PSTART:STARTTIME:TYPE:ID:USER:` (hex fields, 8 digits) and run as tasks
  (`vzcreate`, `vzstart`, `vzshutdown`, `vzstop`, `vzdestroy`); a new container exists at once
  with `lock: create` until its task ends (it is removed if the task fails);
- `GET /nodes/{node}/lxc` reports `vmid` as a string, `/cluster/resources` as an integer, as PVE does;
- `tags` are `;`-separated (`,` and spaces accepted on input); the config has a `digest`, and a
  `PUT .../config` with a stale `digest` is refused;
- a running container's `eth0` has an address from `addresses` (cycled; or the static `ip=` of
  `net0`); `set_address(vmid, ip)` changes it.

Tasks finish when `task_polls` status polls have answered `running` and `task_seconds` have
passed (both 0 by default: the first poll sees the end). Fault injection on the object:
`fail_next_task(kind, exitstatus)`, `hang_next_task(kind)` (never ends until `finish_task(upid)`),
`fail_next_request(status, message, method=None)`. `calls` logs `(method, path)`.
`hidden` VMIDs model a token without `VM.Audit` on them: they exist, are not listed, and every route of
theirs answers 403. `hooks` are called as `hook(event, vmid, ip)` when a container has `started`, `stopped` or
been `destroyed` (a test boots what runs inside the container there: its node agent).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.IGNORECASE)
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", re.I
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: Config keys a create or a PUT may set; anything else is "property is not defined in schema".
_CONFIG_KEYS = {
    "hostname", "memory", "swap", "cores", "net0", "net1", "tags", "description", "onboot",
    "unprivileged", "features", "nameserver", "searchdomain", "ostype", "arch", "cpulimit", "cpuunits",
}  # fmt: skip
_CREATE_ONLY = {"vmid", "ostemplate", "storage", "rootfs", "password", "ssh-public-keys", "start", "pool"}


class PveError(Exception):
    """An error answer."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def _param_error(errors: dict[str, str]) -> PveError:
    return PveError(400, "Parameter verification failed.", errors)


@dataclass
class Task:
    """A PVE worker task."""

    upid: str
    node: str
    kind: str
    vmid: int
    user: str
    pid: int
    pstart: int
    starttime: int
    started: float
    polls_left: int
    hung: bool = False
    fail_with: str | None = None
    status: str = "running"
    exitstatus: str | None = None
    on_success: Callable[[], None] | None = None
    on_failure: Callable[[], None] | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class Container:
    """One LXC container's config and run state."""

    vmid: int
    node: str
    config: dict[str, Any]
    status: str = "stopped"
    ip: str | None = None
    started_at: float | None = None
    pool: str | None = None


class FakeProxmox:
    """In-memory Proxmox VE; see the module docstring."""

    def __init__(
        self,
        nodes: Iterable[str] = ("pve",),
        tokens: dict[str, str] | None = None,
        addresses: Iterable[str] = ("127.0.0.1",),
        task_polls: int = 0,
        task_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.nodes = list(nodes)
        self.tokens = dict(tokens or {})
        self.task_polls = task_polls
        self.task_seconds = task_seconds
        self.containers: dict[int, Container] = {}
        self.tasks: dict[str, Task] = {}
        self.calls: list[tuple[str, str]] = []
        self._addresses = itertools.cycle(list(addresses))
        self._clock = clock
        self._pids = itertools.count(0x1000)
        self._task_faults: list[tuple[str | None, str | None]] = []  # (kind, exitstatus; None = hang)
        self._request_faults: list[tuple[int, str, str | None]] = []
        self._lock = threading.RLock()
        self.hooks: list[Callable[[str, int, str | None], None]] = []
        #: VMIDs the token has no `VM.Audit` on: not listed, and 403 `Permission check failed` on every
        #: route of theirs (a create on one still fails: `CT N already exists`).
        self.hidden: set[int] = set()
        #: Nodes the cluster reports `offline` (`GET /nodes`, `/cluster/resources`): a host that is down.
        self.offline: set[str] = set()
        base = "/api2/json"
        lxc = f"{base}/nodes/{{node}}/lxc/{{vmid}}"
        self.app = Starlette(
            routes=[
                Route(f"{base}/version", self._version, methods=["GET"]),
                Route(f"{base}/nodes", self._nodes, methods=["GET"]),
                Route(f"{base}/cluster/resources", self._resources, methods=["GET"]),
                Route(f"{base}/nodes/{{node}}/lxc", self._lxc_collection, methods=["GET", "POST"]),
                Route(lxc, self._lxc_member, methods=["GET", "DELETE"]),
                Route(f"{lxc}/config", self._config, methods=["GET", "PUT"]),
                Route(f"{lxc}/status/current", self._status_current, methods=["GET"]),
                Route(f"{lxc}/status/{{action}}", self._status_action, methods=["POST"]),
                Route(f"{lxc}/interfaces", self._interfaces, methods=["GET"]),
                Route(f"{base}/nodes/{{node}}/tasks/{{upid}}/status", self._task_status, methods=["GET"]),
                Route(f"{base}/nodes/{{node}}/tasks/{{upid}}/log", self._task_log, methods=["GET"]),
            ]
        )

    # -- test API ---------------------------------------------------------------------------------

    def fail_next_task(self, kind: str | None = None, exitstatus: str = "command failed: exit code 1") -> None:
        """The next task (of `kind`, e.g. `vzstart`) ends with `exitstatus` instead of `OK`."""
        with self._lock:
            self._task_faults.append((kind, exitstatus))

    def hang_next_task(self, kind: str | None = None) -> None:
        """The next task (of `kind`) stays `running` until `finish_task`."""
        with self._lock:
            self._task_faults.append((kind, None))

    def finish_task(self, upid: str, exitstatus: str = "OK") -> None:
        """End a (hung) task now with `exitstatus`; `OK` applies its effect."""
        with self._lock:
            task = self.tasks[upid]
            task.hung = False
            self._end(task, exitstatus)

    def fail_next_request(self, status: int = 500, message: str = "internal error", method: str | None = None) -> None:
        """Answer the next request (of `method`) with `status` and `message`."""
        with self._lock:
            self._request_faults.append((status, message, method.upper() if method else None))

    def set_address(self, vmid: int, ip: str) -> None:
        """The address the container's `eth0` reports."""
        with self._lock:
            self.containers[vmid].ip = ip

    def _notify(self, event: str, container: Container) -> None:
        for hook in self.hooks:
            hook(event, container.vmid, container.ip)

    def task_kinds(self) -> list[str]:
        """The type of every task started so far, in order."""
        with self._lock:
            return [t.kind for t in self.tasks.values()]

    # -- plumbing ---------------------------------------------------------------------------------

    async def _serve(self, request: Request, handler: Callable[[dict[str, Any]], Any]) -> JSONResponse:
        self.calls.append((request.method, request.url.path))
        with self._lock:
            fault = next((f for f in self._request_faults if f[2] in (None, request.method)), None)
            if fault is not None:
                self._request_faults.remove(fault)
                return JSONResponse({"data": None, "message": fault[1]}, status_code=fault[0])
        if not self._authorized(request.headers.get("authorization", "")):
            return JSONResponse({"data": None, "message": "authentication failure"}, status_code=401)
        params: dict[str, Any] = dict(request.query_params)
        if request.method in ("POST", "PUT"):
            raw = (await request.body()).decode("utf-8", "replace")
            if request.headers.get("content-type", "").startswith("application/json") and raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    return JSONResponse({"data": None, "message": "invalid JSON body"}, status_code=400)
                params.update({k: v for k, v in body.items()} if isinstance(body, dict) else {})
            else:
                params.update(parse_qsl(raw, keep_blank_values=True))
        try:
            with self._lock:
                self._advance()
                data = handler(params)
        except PveError as error:
            body = {"data": None, "message": error.message}
            if error.errors:
                body["errors"] = error.errors
            return JSONResponse(body, status_code=error.status)
        return JSONResponse({"data": data})

    def _authorized(self, header: str) -> bool:
        prefix = "PVEAPIToken="
        if not header.startswith(prefix):
            return False
        token_id, sep, secret = header[len(prefix) :].partition("=")
        return bool(sep) and "!" in token_id and "@" in token_id and self.tokens.get(token_id) == secret

    def _user(self, request: Request) -> str:
        return request.headers.get("authorization", "")[len("PVEAPIToken=") :].partition("=")[0]

    def _node(self, node: str) -> str:
        if node not in self.nodes:
            raise PveError(500, f"hostname lookup '{node}' failed - failed to get address info for: {node}")
        return node

    def _container(self, node: str, vmid: str) -> Container:
        self._node(node)
        number = _vmid(vmid)
        if number in self.hidden:
            raise PveError(403, f"Permission check failed (/vms/{number}, VM.Audit)")
        container = self.containers.get(number)
        if container is None or container.node != node:
            raise PveError(500, f"Configuration file 'nodes/{node}/lxc/{number}.conf' does not exist")
        return container

    @staticmethod
    def _unlocked(container: Container) -> None:
        if "lock" in container.config:
            raise PveError(500, f"CT is locked ({container.config['lock']})")

    # -- tasks ------------------------------------------------------------------------------------

    def _start_task(
        self,
        node: str,
        kind: str,
        vmid: int,
        user: str,
        on_success: Callable[[], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> str:
        now = self._clock()
        pid, pstart, starttime = next(self._pids), int(now * 100) & 0xFFFFFFFF, int(now)
        upid = f"UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{vmid}:{user}:"
        task = Task(upid, node, kind, vmid, user, pid, pstart, starttime, now, self.task_polls)
        task.on_success, task.on_failure = on_success, on_failure
        fault = next((f for f in self._task_faults if f[0] in (None, kind)), None)
        if fault is not None:
            self._task_faults.remove(fault)
            if fault[1] is None:
                task.hung = True
            else:
                task.fail_with = fault[1]
        task.log.append(f"starting task {upid}")
        self.tasks[upid] = task
        return upid

    def _due(self, task: Task) -> bool:
        return (
            task.status == "running"
            and not task.hung
            and task.polls_left <= 0
            and self._clock() - task.started >= self.task_seconds
        )

    def _advance(self) -> None:
        """End every task that is due (tasks progress on their own, whoever asks)."""
        for task in list(self.tasks.values()):
            if self._due(task):
                self._end(task, task.fail_with or "OK")

    def _end(self, task: Task, exitstatus: str) -> None:
        if task.status != "running":
            return
        task.status, task.exitstatus = "stopped", exitstatus
        task.log.append(f"TASK {'OK' if exitstatus == 'OK' else 'ERROR: ' + exitstatus}")
        callback = task.on_success if exitstatus == "OK" else task.on_failure
        if callback is not None:
            callback()

    # -- routes: cluster --------------------------------------------------------------------------

    async def _version(self, request: Request) -> JSONResponse:
        return await self._serve(request, lambda _: {"version": "8.2.4", "release": "8.2", "repoid": "faa83925"})

    async def _nodes(self, request: Request) -> JSONResponse:
        def handle(_: dict[str, Any]) -> Any:
            return [
                {
                    "node": n,
                    "id": f"node/{n}",
                    "type": "node",
                    "status": "offline" if n in self.offline else "online",
                    "level": "",
                    "maxcpu": 8,
                    "cpu": 0.02,
                    "maxmem": 32 * 2**30,
                    "mem": 4 * 2**30,
                    "maxdisk": 256 * 2**30,
                    "disk": 16 * 2**30,
                    "uptime": 86400,
                }
                for n in self.nodes
            ]

        return await self._serve(request, handle)

    async def _resources(self, request: Request) -> JSONResponse:
        def handle(params: dict[str, Any]) -> Any:
            kind = params.get("type")
            if kind not in (None, "vm", "node", "storage", "sdn"):
                raise _param_error({"type": f"value '{kind}' does not have a value in the enumeration"})
            out: list[dict[str, Any]] = []
            if kind in (None, "node"):
                out += [{"id": f"node/{n}", "type": "node", "node": n,
                         "status": "offline" if n in self.offline else "online"} for n in self.nodes]
            if kind in (None, "vm"):
                out += [self._summary(c, vmid_as_int=True) | {"id": f"lxc/{c.vmid}"} for c in self._sorted()]
            return out

        return await self._serve(request, handle)

    def _sorted(self) -> list[Container]:
        """The containers the token may see (PVE lists only those it has `VM.Audit` on)."""
        return [self.containers[v] for v in sorted(self.containers) if v not in self.hidden]

    def _summary(self, c: Container, vmid_as_int: bool) -> dict[str, Any]:
        memory = int(c.config.get("memory", 512)) * 2**20
        out: dict[str, Any] = {
            "vmid": c.vmid if vmid_as_int else str(c.vmid),
            "name": c.config.get("hostname", f"CT{c.vmid}"),
            "type": "lxc",
            "node": c.node,
            "status": c.status,
            "template": 0,
            "maxmem": memory,
            "mem": memory // 4 if c.status == "running" else 0,
            "maxdisk": 8 * 2**30,
            "disk": 2**30,
            "cpus": int(c.config.get("cores", 1)),
            "cpu": 0.01 if c.status == "running" else 0,
            "uptime": int(self._clock() - c.started_at) if c.status == "running" and c.started_at else 0,
            "netin": 0,
            "netout": 0,
            "diskread": 0,
            "diskwrite": 0,
        }
        if "tags" in c.config:
            out["tags"] = c.config["tags"]
        if "lock" in c.config:
            out["lock"] = c.config["lock"]
        if c.pool:
            out["pool"] = c.pool
        return out

    # -- routes: containers -----------------------------------------------------------------------

    async def _lxc_collection(self, request: Request) -> JSONResponse:
        node = request.path_params["node"]
        if request.method == "GET":
            return await self._serve(
                request,
                lambda _: [self._summary(c, vmid_as_int=False) for c in self._sorted() if c.node == self._node(node)],
            )
        return await self._serve(request, lambda params: self._create(node, params, self._user(request)))

    def _create(self, node: str, params: dict[str, Any], user: str) -> str:
        self._node(node)
        missing = {k: "property is missing and it is not optional" for k in ("vmid", "ostemplate") if k not in params}
        if missing:
            raise _param_error(missing)
        vmid = _vmid(params["vmid"])
        unknown = set(params) - _CONFIG_KEYS - _CREATE_ONLY
        if unknown:
            raise _param_error({k: "property is not defined in schema and the schema does not allow additional "
                                   "properties" for k in sorted(unknown)})  # fmt: skip
        config = _config_values(params)
        start = _boolean(params, "start", False)
        if vmid in self.containers:
            raise PveError(500, f"CT {vmid} already exists on node '{self.containers[vmid].node}'")
        storage = str(params.get("storage", "local"))
        rootfs = str(params.get("rootfs", f"{storage}:4"))
        volume, _, size = rootfs.partition(":")
        if not size.split(",")[0].isdigit():
            raise _param_error({"rootfs": f"invalid format - unable to parse volume size '{size}'"})
        config.setdefault("hostname", f"CT{vmid}")
        config.setdefault("memory", 512)
        config.setdefault("swap", 512)
        config.setdefault("cores", 1)
        config.update(
            rootfs=f"{volume}:vm-{vmid}-disk-0,size={size.split(',')[0]}G",
            ostype="debian",
            arch="amd64",
            lock="create",
        )
        config.setdefault("unprivileged", 0)
        container = Container(vmid, node, config, pool=str(params["pool"]) if params.get("pool") else None)
        self.containers[vmid] = container

        def created() -> None:
            container.config.pop("lock", None)
            if start:
                self._run(container)

        def failed() -> None:
            self.containers.pop(vmid, None)

        return self._start_task(node, "vzcreate", vmid, user, created, failed)

    def _run(self, container: Container) -> None:
        container.status = "running"
        container.started_at = self._clock()
        static = _static_ip(container.config.get("net0", ""))
        if static is not None:
            container.ip = static
        elif container.ip is None:
            container.ip = next(self._addresses)
        self._notify("started", container)

    async def _lxc_member(self, request: Request) -> JSONResponse:
        node, vmid = request.path_params["node"], request.path_params["vmid"]
        if request.method == "GET":

            def index(_: dict[str, Any]) -> Any:
                self._container(node, vmid)
                return [{"subdir": s} for s in ("config", "status", "interfaces", "snapshot", "firewall")]

            return await self._serve(request, index)

        def destroy(params: dict[str, Any]) -> str:
            container = self._container(node, vmid)
            self._unlocked(container)
            _boolean(params, "purge", False)
            _boolean(params, "destroy-unreferenced-disks", False)
            if container.status == "running" and not _boolean(params, "force", False):
                raise PveError(500, f"CT {container.vmid} is running - destroy failed")

            def destroyed() -> None:
                self.containers.pop(container.vmid, None)
                self._notify("destroyed", container)

            return self._start_task(node, "vzdestroy", container.vmid, self._user(request), destroyed)

        return await self._serve(request, destroy)

    async def _config(self, request: Request) -> JSONResponse:
        node, vmid = request.path_params["node"], request.path_params["vmid"]

        def get(_: dict[str, Any]) -> Any:
            container = self._container(node, vmid)
            return {**container.config, "digest": _digest(container.config)}

        def put(params: dict[str, Any]) -> Any:
            container = self._container(node, vmid)
            self._unlocked(container)
            if "digest" in params and params["digest"] != _digest(container.config):
                raise PveError(500, "detected modified configuration - file changed by other user? Try again.")
            deletes = [k.strip() for k in str(params.get("delete", "")).replace(";", ",").split(",") if k.strip()]
            settable = {k: v for k, v in params.items() if k not in ("digest", "delete")}
            unknown = (set(settable) | set(deletes)) - _CONFIG_KEYS
            if unknown:
                raise _param_error({k: "property is not defined in schema" for k in sorted(unknown)})
            container.config.update(_config_values(settable))
            for key in deletes:
                container.config.pop(key, None)
            return None

        return await self._serve(request, get if request.method == "GET" else put)

    async def _status_current(self, request: Request) -> JSONResponse:
        node, vmid = request.path_params["node"], request.path_params["vmid"]

        def handle(_: dict[str, Any]) -> Any:
            container = self._container(node, vmid)
            out = self._summary(container, vmid_as_int=False)
            if container.status == "running":
                out["pid"] = 40000 + container.vmid
            return out

        return await self._serve(request, handle)

    async def _status_action(self, request: Request) -> JSONResponse:
        node, vmid, action = (request.path_params[k] for k in ("node", "vmid", "action"))

        def handle(params: dict[str, Any]) -> str:
            if action not in ("start", "shutdown", "stop"):
                raise PveError(501, f"Method 'POST /nodes/{node}/lxc/{vmid}/status/{action}' not implemented")
            container = self._container(node, vmid)
            self._unlocked(container)
            user = self._user(request)
            if action == "start":
                if container.status == "running":
                    raise PveError(500, f"CT {container.vmid} already running")
                return self._start_task(node, "vzstart", container.vmid, user, lambda: self._run(container))
            if container.status != "running":
                raise PveError(500, f"CT {container.vmid} not running")

            def stopped() -> None:
                container.status = "stopped"
                container.started_at = None
                self._notify("stopped", container)

            kind = "vzshutdown" if action == "shutdown" else "vzstop"
            return self._start_task(node, kind, container.vmid, user, stopped)

        return await self._serve(request, handle)

    async def _interfaces(self, request: Request) -> JSONResponse:
        node, vmid = request.path_params["node"], request.path_params["vmid"]

        def handle(_: dict[str, Any]) -> Any:
            container = self._container(node, vmid)
            if container.status != "running":
                raise PveError(500, f"CT {container.vmid} not running")
            hwaddr = "BC:24:11:" + ":".join(f"{b:02X}" for b in container.vmid.to_bytes(3, "big"))
            return [
                {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"},
                {"name": "eth0", "hwaddr": hwaddr, "inet": f"{container.ip}/24", "inet6": "fe80::be24:11ff:fe00:1/64"},
            ]

        return await self._serve(request, handle)

    # -- routes: tasks ----------------------------------------------------------------------------

    def _task(self, node: str, upid: str) -> Task:
        self._node(node)
        if not re.fullmatch(r"UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:]+:[^:]*:[^:]+:", upid):
            raise _param_error({"upid": "value does not match the regex pattern"})
        task = self.tasks.get(upid)
        if task is None or task.node != node:
            raise PveError(500, "no such task")
        return task

    async def _task_status(self, request: Request) -> JSONResponse:
        node, upid = request.path_params["node"], request.path_params["upid"]

        def handle(_: dict[str, Any]) -> Any:
            task = self._task(node, upid)
            if task.status == "running" and task.polls_left > 0:
                task.polls_left -= 1
            elif self._due(task):
                self._end(task, task.fail_with or "OK")
            out: dict[str, Any] = {
                "upid": task.upid,
                "node": task.node,
                "pid": task.pid,
                "pstart": task.pstart,
                "starttime": task.starttime,
                "type": task.kind,
                "id": str(task.vmid),
                "user": task.user,
                "status": task.status,
            }
            if task.exitstatus is not None:
                out["exitstatus"] = task.exitstatus
            return out

        return await self._serve(request, handle)

    async def _task_log(self, request: Request) -> JSONResponse:
        node, upid = request.path_params["node"], request.path_params["upid"]
        return await self._serve(
            request, lambda _: [{"n": i + 1, "t": line} for i, line in enumerate(self._task(node, upid).log)]
        )


# -- parameter parsing ------------------------------------------------------------------------------


def _vmid(value: Any) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise _param_error({"vmid": "type check ('integer') failed - got '" + str(value) + "'"}) from None
    if not 100 <= number <= 999_999_999:
        raise _param_error({"vmid": "value must have a minimum value of 100"})
    return number


def _boolean(params: dict[str, Any], key: str, default: bool) -> bool:
    if key not in params:
        return default
    value = str(params[key]).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _param_error({key: f"type check ('boolean') failed - got '{params[key]}'"})


def _config_values(params: dict[str, Any]) -> dict[str, Any]:
    """Validated config values from request parameters (create-only ones are skipped)."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in params.items():
        if key in _CREATE_ONLY:
            continue
        text = str(value)
        if key in ("memory", "swap", "cores", "onboot", "unprivileged", "cpuunits"):
            if not text.isdigit() and text.lower() not in _TRUE | _FALSE:
                errors[key] = f"type check ('integer') failed - got '{text}'"
                continue
            out[key] = int(text) if text.isdigit() else int(text.lower() in _TRUE)
            if key == "cores" and not 1 <= out[key] <= 8192:
                errors[key] = "value must have a minimum value of 1"
        elif key == "hostname":
            if not _HOSTNAME.match(text):
                errors[key] = f"value does not match the regex pattern - '{text}'"
            out[key] = text
        elif key == "tags":
            tags = [t for t in re.split(r"[;, ]+", text) if t]
            bad = [t for t in tags if not _TAG.match(t)]
            if bad:
                errors[key] = f"invalid format - invalid tag '{bad[0]}'"
            out[key] = ";".join(dict.fromkeys(tags))
        else:
            out[key] = text
    if errors:
        raise _param_error(errors)
    return out


def _static_ip(net: str) -> str | None:
    for part in str(net).split(","):
        key, _, value = part.partition("=")
        if key == "ip" and value not in ("", "dhcp", "manual"):
            return value.split("/")[0]
    return None


def _digest(config: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
