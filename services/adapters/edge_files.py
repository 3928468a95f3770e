"""The local edge: `DATA_DIR/edge/dns.json` (stands for Cloudflare) and `proxy.json` (for Velocity).

`dns.json` is a JSON list of records shaped like Cloudflare DNS records; a game
instance gets one SRV record named `_minecraft._tcp.EDGE_NAME.ZONE`. Its target
is `127.0.0.1`, not a name under the zone: the zone (`play.zlh.localhost` by
default) has no A records on this machine, so the only target a client on
localhost can actually reach is the loopback address.

`proxy.json` is a JSON object from server name (`EDGE_NAME`) to `host:port`, as
in Velocity's `[servers]`. Our ownership marks and the forced hosts (Velocity's
`[forced-hosts]`) live in the sidecar `proxy-meta.json`, so proxy.json keeps its
shape: `{"owners": {server: "zlh instance ID"}, "forced_hosts": {host:
{"servers": [server], "comment": "zlh instance ID"}}}`. An entry of
proxy.json without an owner there was not made by us (a hand edit) and is never
changed or removed through `LocalEdge`. Registering writes the owner claim
before proxy.json, unregistering drops it after, so a crash in between never
makes one of our entries look foreign.

Operators may edit both by hand. Missing or empty files read as empty; a file
that is not valid JSON of the right shape raises `DriverError("edge_file_corrupt")`
rather than being silently overwritten. Every write is a read-modify-write under
an `fcntl.flock` on `edge/.lock` (serialized across threads and processes) and
lands atomically (temp file in the same directory, fsync, `os.replace`).

`LocalEdge` is these files behind the `DnsProvider` and `ProxyRegistry` ports
(`ZLH_DNS=local`, `ZLH_PROXY=local`), with their ownership rules
(`services.adapters.edge_rules`): a record or entry without the caller's mark
is never changed or deleted (`record_not_ours`). Unlike Cloudflare, it keeps an
IP address as an SRV target as it is and makes no A record for it, for the
reason above.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
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
from services.infrastructure.files import atomic_write_text, file_lock
from services.ports import DriverError

log = logging.getLogger(__name__)

T = TypeVar("T")


class EdgeFiles:
    """Reads and writes the edge files under one directory (`DATA_DIR/edge`)."""

    def __init__(self, edge_dir: Path) -> None:
        self.dir = Path(edge_dir)
        self.dns_path = self.dir / "dns.json"
        self.proxy_path = self.dir / "proxy.json"
        self.meta_path = self.dir / "proxy-meta.json"
        self.lock_path = self.dir / ".lock"

    # -- reading ------------------------------------------------------------------------------

    def _load(self, path: Path) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read the edge file %s: %s", path, exc)
            raise DriverError("edge_file_corrupt", f"cannot read the edge file {path.name}") from exc
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DriverError("edge_file_corrupt", f"the edge file {path.name} is not valid JSON: {exc}") from exc

    def read_dns(self) -> list[dict[str, Any]]:
        """Every record in dns.json, as stored."""
        data = self._load(self.dns_path)
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DriverError("edge_file_corrupt", f"the edge file {self.dns_path.name} must be a JSON list of objects")
        return data

    def read_proxy(self) -> dict[str, str]:
        """The proxy.json mapping from server name to `host:port`."""
        data = self._load(self.proxy_path)
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise DriverError("edge_file_corrupt",
                              f"the edge file {self.proxy_path.name} must be a JSON object of strings")
        return data

    def read_proxy_meta(self) -> dict[str, Any]:
        """The proxy-meta.json sidecar: `{"owners": {...}, "forced_hosts": {...}}` (empty when missing)."""
        data = self._load(self.meta_path)
        if data is None:
            return {"owners": {}, "forced_hosts": {}}
        owners = data.get("owners", {}) if isinstance(data, dict) else None
        forced = data.get("forced_hosts", {}) if isinstance(data, dict) else None
        if (
            not isinstance(owners, dict)
            or not all(isinstance(v, str) for v in owners.values())
            or not isinstance(forced, dict)
            or not all(
                isinstance(v, dict)
                and isinstance(v.get("servers"), list)
                and all(isinstance(x, str) for x in v["servers"])
                and isinstance(v.get("comment", ""), str)
                for v in forced.values()
            )
        ):
            raise DriverError(
                "edge_file_corrupt",
                f'the edge file {self.meta_path.name} must be {{"owners": {{server: comment}}, '
                f'"forced_hosts": {{host: {{"servers": [...], "comment": ...}}}}}}',
            )
        return {"owners": owners, "forced_hosts": forced}

    def read_proxy_map(self) -> ProxyMap:
        """proxy.json and its sidecar as one `ProxyMap` (owner claims of absent servers are dropped)."""
        servers = self.read_proxy()
        meta = self.read_proxy_meta()
        return ProxyMap(
            servers=servers,
            forced={host: list(entry["servers"]) for host, entry in meta["forced_hosts"].items()},
            marks={name: mark for name, mark in meta["owners"].items() if name in servers},
            forced_marks={host: e["comment"] for host, e in meta["forced_hosts"].items() if e.get("comment")},
        )

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with file_lock(self.lock_path):
                yield
        except OSError as exc:
            log.warning("edge files under %s: %s", self.dir, exc)
            reason = exc.strerror or type(exc).__name__
            raise DriverError("edge_io_error", f"cannot write the edge files: {reason}") from exc

    def _write(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    def update_dns(self, change: Callable[[list[dict[str, Any]]], tuple[list[dict[str, Any]] | None, T]]) -> T:
        """Read-modify-write dns.json under the lock: `change(records)` returns `(new records or None, result)`."""
        with self._locked():
            records = self.read_dns()
            new, result = change(records)
            if new is not None and new != records:
                self._write(self.dns_path, new)
            return result

    def update_proxy(self, change: Callable[[ProxyMap], ProxyMap | None]) -> bool:
        """Read-modify-write proxy.json and its sidecar under the lock; return whether anything changed.

        New owner claims land before proxy.json, dropped ones after it (see the module docstring).
        """
        with self._locked():
            old = self.read_proxy_map()
            new = change(old)
            if new is None or new == old:
                return False
            old_meta, new_meta = _meta_of(old), _meta_of(new)
            claims = {
                "owners": {**old_meta["owners"], **new_meta["owners"]},
                "forced_hosts": {**old_meta["forced_hosts"], **new_meta["forced_hosts"]},
            }
            if claims != self.read_proxy_meta():
                self._write(self.meta_path, claims)
            if new.servers != old.servers:
                self._write(self.proxy_path, new.servers)
            if new_meta != claims:
                self._write(self.meta_path, new_meta)
            return True



class LocalEdge:
    """`DnsProvider` and `ProxyRegistry` over the edge files under `edge_dir`; see the module docstring."""

    def __init__(self, edge_dir: Path) -> None:
        self.edge = EdgeFiles(edge_dir)

    def __repr__(self) -> str:
        return f"LocalEdge({str(self.edge.dir)!r})"

    # -- DnsProvider ------------------------------------------------------------------------------

    def upsert_srv(self, name: str, target: str, port: int, comment: str) -> dict[str, Any]:
        return self.edge.update_dns(lambda records: upsert_in(records, srv_fields(name, target, port, comment)))

    def upsert_address(self, name: str, ip: str, comment: str) -> dict[str, Any]:
        return self.edge.update_dns(lambda records: upsert_in(records, address_fields(name, ip, comment)))

    def remove(self, name: str, comment: str) -> bool:
        return self.edge.update_dns(lambda records: remove_in(records, name, comment))

    def list_records(self) -> list[dict[str, Any]]:
        return self.edge.read_dns()

    # -- ProxyRegistry ----------------------------------------------------------------------------

    def register(self, server: str, address: str, forced_host: str | None, comment: str) -> str:
        self.edge.update_proxy(lambda current: plan_register(current, server, address, forced_host, comment))
        return address

    def unregister(self, server: str, comment: str) -> bool:
        return self.edge.update_proxy(lambda current: plan_unregister(current, server, comment))

    def list_servers(self) -> dict[str, str]:
        return self.edge.read_proxy()

    def list_forced_hosts(self) -> dict[str, list[str]]:
        return self.edge.read_proxy_map().forced

    def list_owners(self) -> dict[str, str]:
        return self.edge.read_proxy_map().marks


def _meta_of(proxy: ProxyMap) -> dict[str, Any]:
    """The sidecar document for a `ProxyMap`."""
    forced: dict[str, Any] = {}
    for host, servers in proxy.forced.items():
        entry: dict[str, Any] = {"servers": list(servers)}
        if host in proxy.forced_marks:
            entry["comment"] = proxy.forced_marks[host]
        forced[host] = entry
    return {"owners": dict(proxy.marks), "forced_hosts": forced}

