"""Ports: the interfaces through which services reach the outside world.

Each port is a `typing.Protocol` with a docstring contract; real adapters and
in-memory fakes live in `services.adapters` and both satisfy the same contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID


class DriverError(Exception):
    """An infrastructure step failed; `code` is stable and goes into the operation error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InstanceSpec:
    """What a driver needs to know about an instance to act on it."""

    instance_id: UUID
    kind: str  # "game" | "dev"
    template: str
    edge_name: str  # NAME-SHORTID, unique across customers


class InstanceDriver(Protocol):
    """Runs instances on some infrastructure, one idempotent step at a time.

    Contract, for every method:
    - idempotent: calling it again with the same arguments after success changes
      nothing more and returns the same result;
    - raises `DriverError` with a stable `code` on failure, never anything else
      for expected failures;
    - blocks until the effect is done (or failed).
    """

    def allocate_port(self, spec: InstanceSpec) -> int:
        """Pick a free TCP port on the instance's host and reserve it for the instance."""
        ...

    def create_directory(self, spec: InstanceSpec) -> str:
        """Create the instance's data directory; return its path."""
        ...

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        """Start the instance's server process listening on `port`; return its pid.

        If it is already running on that port, return the running pid.
        """
        ...

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        """Return once the instance accepts connections on `port`; `DriverError` after `timeout` s."""
        ...

    def publish_dns(self, spec: InstanceSpec, port: int) -> dict:
        """Upsert the instance's SRV record (game only); return the record."""
        ...

    def publish_proxy(self, spec: InstanceSpec, port: int) -> str:
        """Upsert the proxy entry `edge_name -> host:port` (game only); return `host:port`."""
        ...

    def address(self, spec: InstanceSpec, port: int) -> str:
        """What the customer connects to: `host:port` for game, the IDE URL for dev."""
        ...

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        """Whether the instance's process is alive and accepting connections."""
        ...

    # Lifecycle: each idempotent; "already gone/stopped" counts as done.

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        """Graceful stop: the `stop` console command, then SIGTERM, then SIGKILL after `timeout`."""
        ...

    def remove_dns(self, spec: InstanceSpec) -> None: ...

    def remove_proxy(self, spec: InstanceSpec) -> None: ...

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Delete the instance's files (the process must be stopped: else `still_running`)."""
        ...

    # Console and files. Paths are relative to the instance root; escaping it is `bad_path`.

    def send_console(self, spec: InstanceSpec, line: str) -> None: ...

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict]:
        """`[{"name", "type": "file"|"dir", "size"}]` of a directory; `not_found` if missing."""
        ...

    def read_file(self, spec: InstanceSpec, path: str) -> bytes: ...

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        """Atomic write; larger than the driver's limit is `too_large`."""
        ...

    # Backups: `.tar.gz` archives of the instance's files, kept outside the instance directory.

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict:
        """Archive the files; return the manifest `{"size", "sha256", "created_at", "path"}`."""
        ...

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        """Verify the archive's checksum, then replace the files atomically (`checksum_mismatch`,
        `not_found`); on any failure the old files stay in place. The process must be stopped."""
        ...

    def delete_backup(self, backup_id: UUID) -> None: ...

    # Observed state, for the controller.

    def observe(self) -> dict:
        """`{"processes": [instance ids with a live server process], "directories": [instance ids with
        a data directory]}` on this driver's host(s)."""
        ...

    def list_dns(self) -> list[dict]:
        """Every DNS record in the zone, as stored (Cloudflare-shaped)."""
        ...

    def list_proxy(self) -> dict[str, str]:
        """The proxy's server map, `server name -> host:port`."""
        ...
