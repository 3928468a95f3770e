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
