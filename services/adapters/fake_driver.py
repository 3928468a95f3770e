"""`FakeDriver`: an in-memory `InstanceDriver` with the same contract as `LocalDriver`, for tests.

Ports come from a counter starting at 30000, processes live in a dict, DNS and
proxy entries in dicts. `fail_on[method] = DriverError(...)` makes that method
raise (until the key is removed); `calls` records `(method, instance_id)` for
every step, failed ones included, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from services.adapters.local.edge import srv_name, srv_record
from services.ports import DriverError, InstanceSpec


@dataclass
class FakeProcess:
    """A pretend server process."""

    pid: int
    port: int
    kind: str


class FakeDriver:
    """In-memory driver; see the module docstring."""

    def __init__(self, dns_zone: str = "play.zlh.localhost", host: str = "127.0.0.1") -> None:
        self.dns_zone = dns_zone
        self.host = host
        self.fail_on: dict[str, DriverError] = {}
        self.calls: list[tuple[str, UUID]] = []
        self.ports: dict[UUID, int] = {}
        self.directories: dict[UUID, str] = {}
        self.processes: dict[UUID, FakeProcess] = {}
        self.dns: dict[str, dict[str, Any]] = {}
        self.proxy: dict[str, str] = {}
        self.console: dict[UUID, list[str]] = {}
        self._next_port = 30000
        self._next_pid = 1000

    def _step(self, method: str, spec: InstanceSpec) -> None:
        self.calls.append((method, spec.instance_id))
        error = self.fail_on.get(method)
        if error is not None:
            raise error

    def dns_name(self, spec: InstanceSpec) -> str:
        return srv_name(spec.edge_name, self.dns_zone)

    # -- InstanceDriver -------------------------------------------------------------------------

    def allocate_port(self, spec: InstanceSpec) -> int:
        self._step("allocate_port", spec)
        if spec.instance_id not in self.ports:
            self.ports[spec.instance_id] = self._next_port
            self._next_port += 1
        return self.ports[spec.instance_id]

    def create_directory(self, spec: InstanceSpec) -> str:
        self._step("create_directory", spec)
        return self.directories.setdefault(spec.instance_id, f"/fake/instances/{spec.instance_id}")

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        self._step("start_process", spec)
        proc = self.processes.get(spec.instance_id)
        if proc is not None and proc.port == port:
            return proc.pid
        self._next_pid += 1
        self.processes[spec.instance_id] = FakeProcess(self._next_pid, port, spec.kind)
        self.console.setdefault(spec.instance_id, [])
        return self._next_pid

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        self._step("wait_connectable", spec)
        proc = self.processes.get(spec.instance_id)
        if proc is None:
            raise DriverError("process_exited", f"{spec.kind} process of {spec.instance_id} is not running")
        if proc.port != port:
            raise DriverError("not_connectable", f"nothing listens on {self.host}:{port}")

    def publish_dns(self, spec: InstanceSpec, port: int) -> dict[str, Any]:
        self._step("publish_dns", spec)
        if spec.kind != "game":
            return {}
        name = self.dns_name(spec)
        record = srv_record(name, port, target=self.host, comment=f"zlh instance {spec.instance_id}")
        self.dns[name] = record
        return record

    def publish_proxy(self, spec: InstanceSpec, port: int) -> str:
        self._step("publish_proxy", spec)
        if spec.kind != "game":
            return ""
        self.proxy[spec.edge_name] = f"{self.host}:{port}"
        return self.proxy[spec.edge_name]

    def address(self, spec: InstanceSpec, port: int) -> str:
        if spec.kind == "dev":
            return f"http://{self.host}:{port}/"
        return f"{self.host}:{port}"

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        proc = self.processes.get(spec.instance_id)
        return proc is not None and proc.port == port

    # -- beyond the protocol (mirrors LocalDriver) ----------------------------------------------

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        self._step("stop_process", spec)
        self.processes.pop(spec.instance_id, None)

    def send_console(self, spec: InstanceSpec, line: str) -> None:
        self._step("send_console", spec)
        if "\n" in line or "\r" in line:
            raise DriverError("bad_command", "a console command is a single line")
        if spec.instance_id not in self.processes:
            raise DriverError("not_running", f"instance {spec.instance_id} is not running")
        self.console[spec.instance_id].append(line)
        if line.strip() == "stop":
            del self.processes[spec.instance_id]

    def remove_dns(self, spec: InstanceSpec) -> None:
        self._step("remove_dns", spec)
        if spec.kind == "game":
            self.dns.pop(self.dns_name(spec), None)

    def remove_proxy(self, spec: InstanceSpec) -> None:
        self._step("remove_proxy", spec)
        if spec.kind == "game":
            self.proxy.pop(spec.edge_name, None)

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Like the local driver: refuses while running, and frees the port reservation."""
        self._step("remove_directory", spec)
        if spec.instance_id in self.processes:
            raise DriverError("still_running", f"instance {spec.instance_id} is still running")
        self.directories.pop(spec.instance_id, None)
        self.ports.pop(spec.instance_id, None)

    def list_dns(self) -> list[dict[str, Any]]:
        return list(self.dns.values())

    def list_proxy(self) -> dict[str, str]:
        return dict(self.proxy)

    def kill_all(self) -> None:
        self.processes.clear()

    # -- test helpers ---------------------------------------------------------------------------

    def crash(self, instance_id: UUID) -> None:
        """Simulate the instance's process dying on its own."""
        self.processes.pop(instance_id, None)
