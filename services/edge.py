"""Use cases for the edge: publish and withdraw a game server's DNS record and proxy entry.

A game server `NAME-SHORTID` on a node reachable at `host:port` gets an SRV record
`_minecraft._tcp.NAME-SHORTID.ZONE -> host:port` (`ZLH_DNS`: the local file or Cloudflare) and a
proxy entry `NAME-SHORTID -> host:port` with the forced host `NAME-SHORTID.ZONE` (`ZLH_PROXY`: the
local file or Velocity). Both carry the instance's ownership mark (`zlh instance ID`), so records
ZLH did not create are never changed or deleted: the providers refuse with `record_not_ours`.
Dev containers have no edge: every call is a no-op for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.reconcile import srv_record_name
from services.ports import DnsProvider, InstanceSpec, ProxyRegistry, owner_of, ownership_comment


@dataclass(frozen=True)
class ObservedEdge:
    """What the edge holds, for the controller: SRV records (name -> port) and proxy entries (server ->
    address), with the instance each one's ownership mark names (None: not ZLH's)."""

    srv_ports: dict[str, int]
    srv_owners: dict[str, UUID | None]
    proxy: dict[str, str]
    proxy_owners: dict[str, UUID | None]


class Edge:
    """The DNS and proxy ports together, as the workers and the controller use them."""

    def __init__(self, dns: DnsProvider, proxy: ProxyRegistry, zone: str) -> None:
        self.dns, self.proxy, self.zone = dns, proxy, zone

    def srv_name(self, spec: InstanceSpec) -> str:
        return srv_record_name(spec.edge_name, self.zone)

    def forced_host(self, spec: InstanceSpec) -> str:
        return f"{spec.edge_name}.{self.zone}"

    def publish_dns(self, spec: InstanceSpec, host: str, port: int) -> dict[str, Any]:
        """Upsert the SRV record (game); `{}` for dev."""
        if spec.kind != "game":
            return {}
        return self.dns.upsert_srv(self.srv_name(spec), host, port, ownership_comment(spec.instance_id))

    def publish_proxy(self, spec: InstanceSpec, host: str, port: int) -> str:
        """Upsert `EDGE_NAME -> host:port` and its forced host (game); `""` for dev."""
        if spec.kind != "game":
            return ""
        return self.proxy.register(spec.edge_name, f"{host}:{port}", self.forced_host(spec),
                                   ownership_comment(spec.instance_id))

    def remove_dns(self, spec: InstanceSpec) -> None:
        """Remove the instance's records (game); idempotent."""
        if spec.kind == "game":
            self.dns.remove(self.srv_name(spec), ownership_comment(spec.instance_id))

    def remove_proxy(self, spec: InstanceSpec) -> None:
        """Remove the instance's proxy entry and forced host (game); idempotent."""
        if spec.kind == "game":
            self.proxy.unregister(spec.edge_name, ownership_comment(spec.instance_id))

    def observe(self) -> ObservedEdge:
        """Every SRV record and proxy entry, ours and others (names normalized)."""
        ports: dict[str, int] = {}
        owners: dict[str, UUID | None] = {}
        for record in self.dns.list_records():
            name = record.get("name")
            port = (record.get("data") or {}).get("port")
            if record.get("type") != "SRV" or not isinstance(name, str) or not isinstance(port, int):
                continue
            key = name.strip().rstrip(".").lower()
            ports[key], owners[key] = port, owner_of(record.get("comment"))
        servers = dict(self.proxy.list_servers())
        marks = self.proxy.list_owners()
        return ObservedEdge(ports, owners, servers, {server: owner_of(marks.get(server)) for server in servers})
