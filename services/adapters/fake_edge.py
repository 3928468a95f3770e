"""`FakeDns` and `FakeProxy`: in-memory `DnsProvider` and `ProxyRegistry` with the real ownership rules.

They keep Cloudflare-shaped records and Velocity-style entries in dicts and apply the same rules as
every adapter (`services.adapters.edge_rules`): a record or entry without the caller's mark is never
changed or removed (`record_not_ours`). `fail_on[method] = DriverError(...)` makes that method raise
until the key is removed; `calls` records `(method, name)` for every call, failed ones included.
"""

from __future__ import annotations

from typing import Any, TypeVar

from services.adapters.edge_rules import (
    ProxyMap,
    address_fields,
    plan_register,
    plan_unregister,
    remove_in,
    srv_fields,
    upsert_in,
)
from services.ports import DriverError

T = TypeVar("T")


class _Recorder:
    def __init__(self) -> None:
        self.fail_on: dict[str, DriverError] = {}
        self.calls: list[tuple[str, str]] = []

    def _call(self, method: str, name: str) -> None:
        self.calls.append((method, name))
        error = self.fail_on.get(method)
        if error is not None:
            raise error


class FakeDns(_Recorder):
    """`DnsProvider` in memory; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []
        self.writes = 0  # how many calls changed the records

    def upsert_srv(self, name: str, target: str, port: int, comment: str) -> dict[str, Any]:
        self._call("upsert_srv", name)
        return self._apply(upsert_in(self.records, srv_fields(name, target, port, comment)))

    def upsert_address(self, name: str, ip: str, comment: str) -> dict[str, Any]:
        self._call("upsert_address", name)
        return self._apply(upsert_in(self.records, address_fields(name, ip, comment)))

    def remove(self, name: str, comment: str) -> bool:
        self._call("remove", name)
        return self._apply(remove_in(self.records, name, comment))

    def _apply(self, change: tuple[list[dict[str, Any]] | None, T]) -> T:
        records, result = change
        if records is not None:
            self.records = records
            self.writes += 1
        return result

    def list_records(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.records]


class FakeProxy(_Recorder):
    """`ProxyRegistry` in memory; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.map = ProxyMap()

    def register(self, server: str, address: str, forced_host: str | None, comment: str) -> str:
        self._call("register", server)
        self.map = plan_register(self.map, server, address, forced_host, comment) or self.map
        return address

    def unregister(self, server: str, comment: str) -> bool:
        self._call("unregister", server)
        changed = plan_unregister(self.map, server, comment)
        if changed is None:
            return False
        self.map = changed
        return True

    def list_servers(self) -> dict[str, str]:
        return dict(self.map.servers)

    def list_forced_hosts(self) -> dict[str, list[str]]:
        return {host: list(servers) for host, servers in self.map.forced.items()}

    def list_owners(self) -> dict[str, str]:
        return dict(self.map.marks)
