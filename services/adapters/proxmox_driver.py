"""`ProxmoxDriver`: the `InstanceDriver` port over Proxmox VE LXC containers (`ZLH_DRIVER=proxmox`).

One container per instance. The Proxmox API (through `proxmoxer`, API token auth,
TLS verified against `ZLH_PROXMOX_CA_FILE` or the system's CAs) creates, starts,
shuts down and destroys it; inside it, a `zlh agent` (baked into the container
template, README "Production: Proxmox") runs the server, its files, console and
backups, and this driver delegates those steps to it with `AgentDriver`, at
`http://ETH0_ADDRESS:ZLH_PROXMOX_AGENT_PORT` with `ZLH_AGENT_SECRET`.

Ownership. A container is ZLH's when its `tags` hold `zlh` and the first line of its
`description` is `zlh instance INSTANCE_ID` (`services.ports.ownership_comment`). A
container without both is never started, stopped, changed or destroyed, whatever its
VMID.

VMIDs. `vmid_candidates(instance_id, range)` is the instance's probe sequence: a hash
of the instance id gives a start inside `ZLH_PROXMOX_VMID_RANGE`, and the next
`MAX_PROBES - 1` VMIDs follow it (wrapping inside the range). Locating an instance
reads the cluster's VMIDs once (`GET /cluster/resources?type=vm`) and walks the
sequence: a candidate holding our container (tag and description naming this
instance) is adopted, whichever position it has; otherwise the create takes the
first candidate that no container uses. Candidates held by anything else (another
instance's container, a foreign one) are skipped, never touched. All candidates
taken: `vmid_exhausted`. A create refused because its VMID is in use after all (a
container made meanwhile, or one the token may not see: 403 on its config) made
nothing: the instance is located again (ours: adopted) and the next candidate tried.

Tasks. Every asynchronous call (create, start, shutdown, stop, destroy) returns a
UPID that is polled (`GET /nodes/{node}/tasks/{upid}/status`) until `stopped`:
`exitstatus` `OK` is success, anything else fails the step with `proxmox_task_failed`
and the task's own text; a task still running at its deadline fails the step with
`proxmox_task_timeout` (the task is left to Proxmox, and not started again).

Power. A created container is started at once and stays running while its instance
exists: stopping an instance stops its server through the agent, which keeps serving
the files, console log and backups. Deleting it (`remove_directory`) removes the files
through the agent (refused while the server runs), shuts the container down, stops it
if the shutdown does not finish in `shutdown_timeout` s, and destroys it with `purge`.

Placement. Under the control plane, each of `ZLH_PROXMOX_NODES` is a control-plane node
(`agent_url` `proxmox://NODE`, README "More than one host") and its `place` step picks
one; `bind_placement` gives this driver the instance's recorded node, and the create
goes there (`not_placed` if the instance has none: nothing is created by guess). Without
a bound placement (the driver alone, as in its contract tests) `choose_node` picks, among
`ZLH_PROXMOX_NODES` that are online, the one with the most free memory (`GET /nodes`).
`on_node(NODE)` is one node's view for the `NodeRouter`: its health is the node's
`online` status in `GET /nodes`, and it observes only that node's containers.

Errors: `proxmox_unauthorized` (401/403), `proxmox_tls_error` (the certificate does
not verify), `proxmox_unreachable`, `proxmox_error` (an API call refused, with its
status and text), `proxmox_task_failed`, `proxmox_task_timeout`, `vmid_exhausted`,
`container_locked`, `container_stopped`, `no_address`, and the agent's own codes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from services.adapters.agent_client import AgentConsole, AgentDriver
from services.ports import DriverError, InstanceSpec, owner_of, ownership_comment, spec_address

log = logging.getLogger(__name__)

#: The ownership tag on every container ZLH creates.
TAG = "zlh"
#: How many VMIDs of an instance's probe sequence are tried.
MAX_PROBES = 16
#: Used when an instance has no template definition at hand (it is only needed to create).
DEFAULT_RESOURCES = {"memory_mb": 1024, "cpus": 1.0, "disk_mb": 4096}
#: GiB of root disk on top of the template's `disk_mb`: the OS, the agent and the template's install.
ROOTFS_BASE_GB = 4

T = TypeVar("T")


@dataclass(frozen=True)
class ProxmoxConfig:
    """What the driver needs; `services.bootstrap` builds it from the `ZLH_PROXMOX_*` settings."""

    url: str  # https://HOST:8006/api2/json
    token_id: str  # USER@REALM!TOKENID
    token_secret: str
    nodes: tuple[str, ...]
    storage: str
    template: str  # a container template volume, e.g. local:vztmpl/zlh-agent-debian-12_amd64.tar.zst
    vmid_range: tuple[int, int]
    agent_secret: str
    ca_file: str | None = None
    agent_port: int = 8100
    bridge: str = "vmbr0"
    pool: str | None = None  # new containers join this resource pool: the token's privileges can stop there
    task_timeout: float = 300.0
    shutdown_timeout: float = 60.0
    boot_timeout: float = 120.0
    poll_interval: float = 0.5
    api_timeout: float = 30.0

    def __repr__(self) -> str:
        return f"ProxmoxConfig(url={self.url!r}, token_id={self.token_id!r}, nodes={self.nodes!r})"


def parse_vmid_range(text: str) -> tuple[int, int]:
    """`10000-19999` -> (10000, 19999); PVE's VMIDs are 100..999999999."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"ZLH_PROXMOX_VMID_RANGE must look like 10000-19999, not {text!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not 100 <= low <= high <= 999_999_999:
        raise ValueError(f"ZLH_PROXMOX_VMID_RANGE {text!r} must be LOW-HIGH within 100-999999999")
    return low, high


def vmid_candidates(instance_id: UUID, vmid_range: tuple[int, int], probes: int = MAX_PROBES) -> list[int]:
    """The instance's VMID probe sequence: a deterministic start inside the range, then the next ones."""
    low, high = vmid_range
    size = high - low + 1
    start = int.from_bytes(hashlib.sha256(instance_id.bytes).digest()[:8], "big") % size
    return [low + (start + i) % size for i in range(min(probes, size))]


def choose_node(nodes: Iterable[dict[str, Any]], allowed: Sequence[str]) -> str:
    """Placement: the online node of `allowed` with the most free memory (`GET /nodes` entries).

    The seam where the control plane's own placement (its Node aggregate) can decide instead.
    """
    online = [n for n in nodes if n.get("node") in allowed and n.get("status", "online") == "online"]
    if not online:
        raise DriverError("no_node", f"none of the Proxmox nodes {', '.join(allowed)} is online")
    return max(online, key=lambda n: (int(n.get("maxmem", 0)) - int(n.get("mem", 0)), -allowed.index(n["node"])))[
        "node"]


#: The `agent_url` of a control-plane node that is a Proxmox VE node: `proxmox://NODE`.
SCHEME = "proxmox://"


def proxmox_node_of(agent_url: str | None) -> str | None:
    """The PVE node a control-plane node stands for (`proxmox://pve1` -> `pve1`), or None."""
    if agent_url and agent_url.startswith(SCHEME) and len(agent_url) > len(SCHEME):
        return agent_url[len(SCHEME):]
    return None


def tags_of(value: Any) -> set[str]:
    return {t for t in re.split(r"[;, ]+", str(value or "")) if t}


def owner_in(config_or_summary: dict[str, Any], description: str | None) -> UUID | None:
    """The instance a container belongs to: our tag and a description whose first line is our mark."""
    if TAG not in tags_of(config_or_summary.get("tags")):
        return None
    first = (description or "").splitlines()[0].strip() if description else ""
    return owner_of(first)


@dataclass(frozen=True)
class Located:
    """A container of ours: where it is and how it runs."""

    instance_id: UUID
    node: str
    vmid: int
    status: str


class ProxmoxDriver:
    """`InstanceDriver` over Proxmox VE and each container's node agent; see the module docstring."""

    def __init__(
        self,
        config: ProxmoxConfig,
        agent_factory: Callable[[str, str, str], AgentDriver] | None = None,
        place: Callable[[InstanceSpec, list[dict[str, Any]]], str] | None = None,
    ) -> None:
        self.config = config
        parts = urlsplit(config.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"ZLH_PROXMOX_URL must be https://HOST:8006/api2/json, not {config.url!r}")
        if parts.path.rstrip("/") not in ("", "/api2/json"):
            raise ValueError(f"ZLH_PROXMOX_URL must end in /api2/json, not {parts.path!r}")
        user, sep, token_name = config.token_id.partition("!")
        if not sep or "@" not in user or not token_name:
            raise ValueError("ZLH_PROXMOX_TOKEN_ID must look like USER@REALM!TOKENID")
        self._api_args = {
            "host": parts.hostname, "port": parts.port or 8006, "user": user, "token_name": token_name,
            "token_value": config.token_secret, "verify_ssl": config.ca_file or True,
            "timeout": config.api_timeout, "service": "PVE",
        }
        self._local = threading.local()
        self._agent_factory = agent_factory or (lambda url, secret, host: AgentDriver(url, secret, host=host))
        self._place = place
        self._agents: dict[str, AgentDriver] = {}
        self._where: dict[UUID, tuple[Located, str, float]] = {}  # instance -> (container, address, seen at)
        self._lock = threading.Lock()
        self._creating: dict[UUID, threading.Lock] = {}
        self._listing: tuple[float, list[dict[str, Any]]] | None = None
        self._owners: dict[tuple[int, str, str, str], UUID | None] = {}

    def __repr__(self) -> str:
        return f"ProxmoxDriver({self.config.url!r})"

    def close(self) -> None:
        with self._lock:
            agents, self._agents = list(self._agents.values()), {}
        for agent in agents:
            agent.close()

    # -- the Proxmox API ---------------------------------------------------------------------------

    @property
    def api(self) -> ProxmoxAPI:
        """One `proxmoxer` client per thread (a `requests.Session` is not shared across threads)."""
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = ProxmoxAPI(**self._api_args)
        return api

    def _call(self, what: str, call: Callable[[ProxmoxAPI], T]) -> T:
        """One API call; every failure becomes a `DriverError` naming `what`."""
        try:
            return call(self.api)
        except ResourceException as exc:
            if exc.status_code in (401, 403):
                raise DriverError("proxmox_unauthorized", f"Proxmox refused the API token ({what}: HTTP "
                                  f"{exc.status_code})") from exc
            detail = f"{exc.status_code} {exc.content}".strip()
            if exc.errors:
                detail += f" {exc.errors}"
            raise DriverError("proxmox_error", f"{what}: {detail}") from exc
        except requests.exceptions.SSLError as exc:
            raise DriverError("proxmox_tls_error", f"{what}: the Proxmox API's TLS certificate does not verify "
                              "(ZLH_PROXMOX_CA_FILE)") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise DriverError("proxmox_unreachable", f"{what}: the Proxmox API cannot be reached "
                              f"({type(exc).__name__})") from exc

    def wait_task(self, node: str, upid: str, what: str, timeout: float | None = None) -> None:
        """Poll a task until it stops; `OK` returns, anything else fails the step with the task's text."""
        timeout = self.config.task_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            self._listing = None  # a task changes what the cluster holds
        while True:
            status = self._call(f"{what}: task status", lambda api: api.nodes(node).tasks(upid).status.get())
            if status.get("status") == "stopped":
                with self._lock:
                    self._listing = None
                exit_status = str(status.get("exitstatus", ""))
                if exit_status == "OK":
                    return
                raise DriverError("proxmox_task_failed", f"{what} failed: {exit_status or 'no exit status'}")
            if time.monotonic() >= deadline:
                raise DriverError("proxmox_task_timeout", f"{what}: task {upid} on node {node} did not finish "
                                  f"within {timeout:.0f}s; it is not started again")
            time.sleep(self.config.poll_interval)

    #: How long a listing of the cluster's containers serves reads (never a create: that lists afresh).
    LISTING_SECONDS = 2.0

    def _vms(self, fresh: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._listing
        if not fresh and cached is not None and time.monotonic() - cached[0] < self.LISTING_SECONDS:
            return cached[1]
        listing = list(self._call("listing containers", lambda api: api.cluster.resources.get(type="vm")))
        with self._lock:
            self._listing = (time.monotonic(), listing)
        return listing

    def _config_of(self, node: str, vmid: int) -> dict[str, Any]:
        return dict(self._call(f"reading CT {vmid}", lambda api: api.nodes(node).lxc(vmid).config.get()))

    def _owner(self, entry: dict[str, Any]) -> UUID | None:
        """The instance a listed container belongs to (its config is read only when it carries our tag, and
        once per container: the answer is kept while its VMID, node, name and tags stay the same)."""
        if entry.get("type", "lxc") != "lxc" or TAG not in tags_of(entry.get("tags")):
            return None
        key = (int(entry["vmid"]), str(entry["node"]), str(entry.get("name", "")), str(entry.get("tags", "")))
        with self._lock:
            if key in self._owners:
                return self._owners[key]
        config = self._config_of(str(entry["node"]), int(entry["vmid"]))
        if "lock" in config:
            return owner_in(config, config.get("description"))  # not settled yet: not remembered
        owner = owner_in(config, config.get("description"))
        with self._lock:
            self._owners[key] = owner
        return owner

    # -- locating and creating ---------------------------------------------------------------------

    def locate(self, spec: InstanceSpec, fresh: bool = True) -> tuple[Located | None, list[int]]:
        """(our container, if any; the candidate VMIDs no container uses, in probe order). Touches nothing."""
        by_vmid = {int(v["vmid"]): v for v in self._vms(fresh)}
        free: list[int] = []
        for vmid in vmid_candidates(spec.instance_id, self.config.vmid_range):
            entry = by_vmid.get(vmid)
            if entry is None:
                free.append(vmid)
                continue
            if self._owner(entry) == spec.instance_id:
                return Located(spec.instance_id, str(entry["node"]), vmid, str(entry.get("status", ""))), free
        return None, free

    def _find(self, spec: InstanceSpec, fresh: bool = True) -> Located | None:
        return self.locate(spec, fresh)[0]

    def ensure(self, spec: InstanceSpec) -> tuple[Located, AgentDriver]:
        """Our container, created (or adopted), running, with its agent answering."""
        with self._lock:
            creating = self._creating.setdefault(spec.instance_id, threading.Lock())
        with creating:
            located, free = self.locate(spec)
            if located is None:
                located = self._create(spec, free)
            located = self._unlocked(located)
            if located.status != "running":
                upid = self._call(f"starting CT {located.vmid}",
                                  lambda api: api.nodes(located.node).lxc(located.vmid).status.start.post())
                self.wait_task(located.node, upid, f"starting CT {located.vmid}")
                located = Located(located.instance_id, located.node, located.vmid, "running")
            address = self._address(located)
            agent = self._agent(address)
            self._wait_agent(agent, located)
            self._remember(located, address)
            return located, agent

    def _create(self, spec: InstanceSpec, free: list[int]) -> Located:
        """Create on the first free candidate. A create refused because the VMID exists after all (a container
        the token cannot see, or one made meanwhile) had no effect: the next candidate is tried; one of ours
        made meanwhile is adopted."""
        for vmid in free:
            try:
                return self._create_at(spec, vmid)
            except _VmidTaken:
                continue
        raise DriverError("vmid_exhausted", f"no free VMID among the {MAX_PROBES} candidates of this instance "
                          f"in {self.config.vmid_range[0]}-{self.config.vmid_range[1]}")

    def _create_at(self, spec: InstanceSpec, vmid: int) -> Located:
        node = self.choose_node(spec)
        resources = spec.definition.resources.as_dict() if spec.definition is not None else DEFAULT_RESOURCES
        params = {
            "vmid": vmid,
            "ostemplate": self.config.template,
            "hostname": _hostname(spec.edge_name),
            "storage": self.config.storage,
            "rootfs": f"{self.config.storage}:{math.ceil(int(resources['disk_mb']) / 1024) + ROOTFS_BASE_GB}",
            "memory": int(resources["memory_mb"]),
            "swap": 0,
            "cores": max(1, math.ceil(float(resources["cpus"]))),
            "net0": f"name=eth0,bridge={self.config.bridge},ip=dhcp",
            "unprivileged": 1,
            "onboot": 1,
            "tags": f"{TAG};{spec.kind}",
            "description": description(spec),
        }
        if self.config.pool:
            params["pool"] = self.config.pool
        what = f"creating CT {vmid} on node {node}"
        try:
            upid = self._call(what, lambda api: api.nodes(node).lxc.post(**params))
        except DriverError as exc:
            if exc.code != "proxmox_error":
                raise
            again, free = self.locate(spec)  # someone took the VMID meanwhile: ours (adopt), or skip it
            if again is not None:
                return again
            if vmid not in free or "already exists" in exc.message or self._exists_unseen(node, vmid):
                raise _VmidTaken(vmid) from exc
            raise
        self.wait_task(node, upid, what)
        log.info("created CT %d on %s for instance %s", vmid, node, spec.instance_id)
        return Located(spec.instance_id, node, vmid, "stopped")

    def _exists_unseen(self, node: str, vmid: int) -> bool:
        """Whether a VMID is used by a container the token may not see: PVE checks `VM.Audit` on
        `/vms/VMID` first (403) and only then looks for the container (500 when there is none)."""
        try:
            self._config_of(node, vmid)
            return True
        except DriverError as exc:
            return exc.code == "proxmox_unauthorized"

    def choose_node(self, spec: InstanceSpec) -> str:
        nodes = list(self._call("listing nodes", lambda api: api.nodes.get()))
        if self._place is not None:
            return self._place(spec, nodes)
        return choose_node(nodes, self.config.nodes)

    def bind_placement(self, placed_node: Callable[[InstanceSpec], str | None]) -> None:
        """Create each container on the PVE node the control plane placed its instance on (`placed_node`:
        the instance's recorded node, None if it has none), never on one of this driver's choosing."""

        def place(spec: InstanceSpec, nodes: list[dict[str, Any]]) -> str:
            node = placed_node(spec)
            if node is None:
                raise DriverError("not_placed", "the server has no Proxmox node recorded; it is not created")
            entry = next((n for n in nodes if n.get("node") == node), None)
            if entry is None or entry.get("status", "online") != "online":
                raise DriverError("node_unreachable", f"the server's Proxmox node {node} is not online")
            return node

        self._place = place

    def node_health(self, node: str) -> None:
        """The PVE node answers when `GET /nodes` lists it `online`; else `node_unreachable` (or the API's
        own error: `proxmox_unreachable`, `proxmox_unauthorized`)."""
        nodes = self._call(f"status of node {node}", lambda api: api.nodes.get())
        entry = next((n for n in nodes or [] if n.get("node") == node), None)
        if entry is None or entry.get("status") != "online":
            state = "not in the cluster" if entry is None else str(entry.get("status", "unknown"))
            raise DriverError("node_unreachable", f"Proxmox node {node} is {state}")

    def on_node(self, node: str) -> ProxmoxNode:
        """One PVE node's view of this driver (the `NodeRouter`'s driver for a `proxmox://NODE` node)."""
        return ProxmoxNode(self, node)

    def _unlocked(self, located: Located) -> Located:
        """Wait (to the task deadline) for a lock another task holds (a create still running) to go."""
        deadline = time.monotonic() + self.config.task_timeout
        while True:
            config = self._config_of(located.node, located.vmid)
            if "lock" not in config:
                status = self._call(f"status of CT {located.vmid}",
                                    lambda api: api.nodes(located.node).lxc(located.vmid).status.current.get())
                return Located(located.instance_id, located.node, located.vmid, str(status.get("status", "")))
            if time.monotonic() >= deadline:
                raise DriverError("container_locked", f"CT {located.vmid} is still locked ({config['lock']}) "
                                  f"after {self.config.task_timeout:.0f}s")
            time.sleep(self.config.poll_interval)

    def _address(self, located: Located) -> str:
        """eth0's IPv4 address as Proxmox reports it (DHCP may take a moment after the start)."""
        deadline = time.monotonic() + self.config.boot_timeout
        while True:
            interfaces = self._call(f"interfaces of CT {located.vmid}",
                                    lambda api: api.nodes(located.node).lxc(located.vmid).interfaces.get())
            for interface in interfaces or []:
                if interface.get("name") == "eth0" and interface.get("inet"):
                    return str(interface["inet"]).split("/")[0]
            if time.monotonic() >= deadline:
                raise DriverError("no_address", f"CT {located.vmid} has no eth0 address after "
                                  f"{self.config.boot_timeout:.0f}s")
            time.sleep(self.config.poll_interval)

    def _agent(self, address: str) -> AgentDriver:
        with self._lock:
            agent = self._agents.get(address)
            if agent is None:
                host = f"[{address}]" if ":" in address else address
                agent = self._agents[address] = self._agent_factory(
                    f"http://{host}:{self.config.agent_port}", self.config.agent_secret, address)
            return agent

    def _wait_agent(self, agent: AgentDriver, located: Located) -> None:
        """The agent starts with the container: wait for it to answer (to the boot deadline)."""
        deadline = time.monotonic() + self.config.boot_timeout
        while True:
            try:
                agent.health()
                return
            except DriverError as exc:
                if exc.code not in ("agent_unreachable", "agent_timeout") or time.monotonic() >= deadline:
                    raise
            time.sleep(self.config.poll_interval)

    def _remember(self, located: Located, address: str) -> None:
        with self._lock:
            self._where[located.instance_id] = (located, address, time.monotonic())

    def _forget(self, instance_id: UUID) -> None:
        with self._lock:
            self._where.pop(instance_id, None)

    #: How long a located container's place and address are trusted without asking Proxmox again.
    CACHE_SECONDS = 30.0

    def _running(self, spec: InstanceSpec) -> tuple[Located, AgentDriver] | None:
        """Our running container and its agent; None when there is no container. A stopped one:
        `container_stopped` (nothing starts it but a provisioning step)."""
        with self._lock:
            cached = self._where.get(spec.instance_id)
        if cached is not None and time.monotonic() - cached[2] < self.CACHE_SECONDS:
            return cached[0], self._agent(cached[1])
        located = self._find(spec, fresh=False)
        if located is None:
            self._forget(spec.instance_id)
            return None
        if located.status != "running":
            raise DriverError("container_stopped", "the instance's container is stopped")
        address = self._address(located)
        self._remember(located, address)
        return located, self._agent(address)

    # -- InstanceDriver: steps that need the container ------------------------------------------------

    def allocate_port(self, spec: InstanceSpec) -> int:
        return self.ensure(spec)[1].allocate_port(spec)

    def create_directory(self, spec: InstanceSpec) -> str:
        return self.ensure(spec)[1].create_directory(spec)

    def install(self, spec: InstanceSpec) -> dict[str, Any]:
        if spec.definition is None:
            raise DriverError("unknown_template", f"template {spec.template!r} is not offered (any more)")
        return self.ensure(spec)[1].install(spec)

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        if spec.definition is None:
            raise DriverError("unknown_template", f"template {spec.template!r} is not offered (any more)")
        return self.ensure(spec)[1].start_process(spec, port)

    # -- InstanceDriver: steps on an existing container -------------------------------------------------

    def _agent_or(self, spec: InstanceSpec, code: str, message: str) -> AgentDriver:
        found = self._running(spec)
        if found is None:
            raise DriverError(code, message)
        return found[1]

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        self._agent_or(spec, "process_exited", "the instance has no container").wait_connectable(spec, port, timeout)

    def public_host(self, spec: InstanceSpec) -> str:
        found = self._running(spec)
        if found is None:
            raise DriverError("not_found", "the instance has no container")
        with self._lock:
            return self._where[spec.instance_id][1]

    def address(self, spec: InstanceSpec, port: int) -> str:
        return spec_address(spec, self.public_host(spec), port)

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        try:
            found = self._running(spec)
        except DriverError as exc:
            if exc.code == "container_stopped":
                return False
            raise
        return found is not None and found[1].is_running(spec, port)

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        """Stop the server (through the agent); the container keeps running. No container, or a stopped
        one: nothing runs, done."""
        try:
            found = self._running(spec)
        except DriverError as exc:
            if exc.code == "container_stopped":
                return
            raise
        if found is not None:
            found[1].stop_process(spec, timeout)

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Remove the files (agent; `still_running` while the server runs), then shut the container down
        (stop after `shutdown_timeout`) and destroy it with purge. Gone already: done."""
        self._forget(spec.instance_id)
        located = self._find(spec)
        if located is None:
            return
        located = self._unlocked(located)
        if located.status == "running":
            self._agent(self._address(located)).remove_directory(spec)
            self._power_off(located)
        what = f"destroying CT {located.vmid}"
        upid = self._call(what, lambda api: api.nodes(located.node).lxc(located.vmid).delete(
            **{"purge": 1, "destroy-unreferenced-disks": 1}))
        self.wait_task(located.node, upid, what)
        log.info("destroyed CT %d on %s (instance %s)", located.vmid, located.node, spec.instance_id)

    def _power_off(self, located: Located) -> None:
        """Shutdown; if it does not finish within `shutdown_timeout` (or fails), a hard stop."""
        lxc = lambda api: api.nodes(located.node).lxc(located.vmid)  # noqa: E731
        grace = self.config.shutdown_timeout
        upid = self._call(f"shutting CT {located.vmid} down",
                          lambda api: lxc(api).status.shutdown.post(timeout=int(grace)))
        try:
            self.wait_task(located.node, upid, f"shutting CT {located.vmid} down", timeout=grace + 10.0)
            return
        except DriverError as exc:
            if exc.code not in ("proxmox_task_failed", "proxmox_task_timeout"):
                raise
            log.warning("CT %d: %s; stopping it", located.vmid, exc.message)
        status = self._call(f"status of CT {located.vmid}", lambda api: lxc(api).status.current.get())
        if status.get("status") == "running":
            upid = self._call(f"stopping CT {located.vmid}", lambda api: lxc(api).status.stop.post())
            self.wait_task(located.node, upid, f"stopping CT {located.vmid}")

    def send_console(self, spec: InstanceSpec, line: str) -> None:
        self._agent_or(spec, "not_running", "the server is not running").send_console(spec, line)

    def console_log(self, spec: InstanceSpec, lines: int = 100) -> str:
        found = self._running(spec)
        return "" if found is None else found[1].console_log(spec, lines)

    def console(self, spec: InstanceSpec, connect_timeout: float = 10.0) -> ProxmoxConsole:
        """The agent's console socket; the container is looked up when it is entered (off the event loop)."""
        return ProxmoxConsole(lambda: self._agent_or(spec, "not_running", "the server is not running")
                              .console(spec, connect_timeout))

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        return self._agent_or(spec, "not_found", "the instance has no files yet").list_files(spec, path)

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        return self._agent_or(spec, "not_found", "the instance has no files yet").read_file(spec, path)

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        self._agent_or(spec, "not_found", "the instance has no files yet").write_file(spec, path, content)

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        self._agent_or(spec, "not_found", "the instance has no files yet").make_directory(spec, path)

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        self._agent_or(spec, "not_found", "the instance has no files yet").delete_path(spec, path, directory)

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        self._agent_or(spec, "not_found", "the instance has no files yet").rename_path(spec, source, target,
                                                                                       overwrite)

    def stats(self, spec: InstanceSpec) -> dict[str, Any]:
        return self._agent_or(spec, "not_found", "the instance has no container").stats(spec)

    def node_stats(self, node: str | None = None) -> dict[str, dict[str, Any]]:
        """The latest sample of every running server, from the agent of each running container of ours (`node`:
        on that PVE node)."""
        samples: dict[str, dict[str, Any]] = {}
        for agent in self._running_agents(node):
            try:
                samples.update(agent.node_stats())
            except DriverError as exc:
                log.warning("a container's agent did not answer stats: %s", exc.code)
        return samples

    def _running_agents(self, node: str | None = None) -> list[AgentDriver]:
        return [self._agent(self._address(Located(e["instance_id"], e["node"], e["vmid"], "running")))
                for e in self._ours() if e["status"] == "running" and node in (None, e["node"])]

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict[str, Any]:
        return self._agent_or(spec, "not_found", "the instance has no files yet").create_backup(spec, backup_id)

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        agent = self._agent_or(spec, "not_found", f"backup {backup_id} does not exist")
        agent.restore_backup(spec, backup_id, sha256)

    def restore_offsite_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str, url: str) -> None:
        agent = self._agent_or(spec, "not_found", "the instance has no container")
        agent.restore_offsite_backup(spec, backup_id, sha256, url)

    def upload_backup(self, backup_id: UUID, parts: list[dict[str, Any]], part_size: int) -> list[dict[str, Any]]:
        """The archive is in its instance's container: the running container whose agent has it uploads it."""
        for agent in self._running_agents():
            try:
                return agent.upload_backup(backup_id, parts, part_size)
            except DriverError as exc:
                if exc.code != "not_found":
                    raise
        raise DriverError("not_found", f"backup {backup_id} is in no running container")

    def delete_backup(self, backup_id: UUID) -> None:
        """A backup lives in its instance's container: every running container of ours is asked to delete it
        (idempotent; a destroyed container took its backups with it)."""
        for entry in self._ours():
            if entry["status"] == "running":
                located = Located(entry["instance_id"], entry["node"], entry["vmid"], "running")
                self._agent(self._address(located)).delete_backup(backup_id)

    # -- observed state -----------------------------------------------------------------------------

    def _ours(self, fresh: bool = True) -> list[dict[str, Any]]:
        """Every container tagged ours: `{"vmid", "node", "status", "instance_id"}` (None: tagged, but its
        description names no instance)."""
        out = []
        for entry in self._vms(fresh):
            if entry.get("type", "lxc") != "lxc" or TAG not in tags_of(entry.get("tags")):
                continue
            out.append({"vmid": int(entry["vmid"]), "node": str(entry["node"]),
                        "status": str(entry.get("status", "")), "instance_id": self._owner(entry)})
        return out

    def observe(self, node: str | None = None) -> dict[str, Any]:
        """`processes` (servers the running containers' agents report), `directories` (instances with a
        container) and `containers` (every container tagged ours, untagged ones never listed); `node`: only
        those on that PVE node."""
        containers = [c for c in self._ours(fresh=True) if node in (None, c["node"])]
        processes: list[str] = []
        for c in containers:
            if c["status"] != "running" or c["instance_id"] is None:
                continue
            located = Located(c["instance_id"], c["node"], c["vmid"], "running")
            try:
                reported = self._agent(self._address(located)).observe()["processes"]
            except DriverError as exc:
                log.warning("observing CT %d: %s: %s", c["vmid"], exc.code, exc.message)
                continue
            processes += [p for p in reported if p == str(c["instance_id"])]
        return {
            "processes": processes,
            "directories": [str(c["instance_id"]) for c in containers if c["instance_id"] is not None],
            "containers": [{**c, "instance_id": str(c["instance_id"]) if c["instance_id"] else None}
                           for c in containers],
        }


class ProxmoxNode:
    """One PVE node's view of a `ProxmoxDriver`: its own health, containers and stats; every instance step
    goes to the driver (which finds the instance's container wherever it is)."""

    def __init__(self, driver: ProxmoxDriver, node: str) -> None:
        self.driver, self.node = driver, node

    def __repr__(self) -> str:
        return f"ProxmoxNode({self.node!r})"

    def health(self) -> None:
        self.driver.node_health(self.node)

    def observe(self) -> dict[str, Any]:
        return self.driver.observe(self.node)

    def node_stats(self) -> dict[str, dict[str, Any]]:
        return self.driver.node_stats(self.node)

    def close(self) -> None:
        """The driver is shared: the router closes it once."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.driver, name)


class ProxmoxConsole:
    """`async with driver.console(spec) as ws`: finds the container's agent in a thread, then its console."""

    def __init__(self, open_agent_console: Callable[[], AgentConsole]) -> None:
        self._open = open_agent_console
        self._inner: AgentConsole | None = None

    async def _connect(self) -> Any:
        self._inner = await asyncio.to_thread(self._open)
        return await self._inner.__aenter__()

    def __await__(self) -> Any:
        return self._connect().__await__()

    async def __aenter__(self) -> Any:
        return await self._connect()

    async def __aexit__(self, *exc: Any) -> None:
        if self._inner is not None:
            await self._inner.__aexit__(*exc)


class _VmidTaken(Exception):
    """A create was refused because its VMID is in use: nothing was made."""


def description(spec: InstanceSpec) -> str:
    """The container's description: the ownership mark first, then what a human needs to know."""
    return (f"{ownership_comment(spec.instance_id)}\n"
            f"server {spec.edge_name} ({spec.kind}, template {spec.template})\n"
            "managed by the ZLH control plane: do not edit or reuse this container")


def _hostname(edge_name: str) -> str:
    """A valid DNS label from the edge name (`NAME-SHORTID`), at most 63 characters."""
    label = re.sub(r"[^a-z0-9-]", "-", f"zlh-{edge_name}".lower())[:63].strip("-")
    return label or "zlh"
