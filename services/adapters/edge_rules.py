"""Rules shared by every edge adapter (`DnsProvider`, `ProxyRegistry`): names, record shapes, ownership.

Pure functions, no I/O. Each adapter reads what its backend holds, asks a `plan_*`
function what to change, and applies the answer its own way (a JSON file, Cloudflare
API calls, a `velocity.toml` edit). A plan refuses, with `DriverError("record_not_ours")`,
any change to a record or entry that does not carry the caller's ownership mark
(`zlh instance INSTANCE_ID`), before anything is written.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from services.ports import DriverError

SRV_SERVICE = "_minecraft._tcp"
SRV_PRIORITY = 0
SRV_WEIGHT = 5
#: Seconds; Cloudflare's lowest TTL outside Enterprise plans (1 would mean "automatic", 300 s).
RECORD_TTL = 60
ADDRESS_TYPES = frozenset({"A", "AAAA"})
MANAGED_TYPES = frozenset({"SRV", "A", "AAAA"})


# -- names ---------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and without the trailing dot."""
    return name.strip().rstrip(".").lower()


def srv_host(name: str) -> str | None:
    """The host of an SRV name: `_minecraft._tcp.alpha-1a2b3c4d.zone` -> `alpha-1a2b3c4d.zone`; None if
    `name` does not start with `_service._proto.`."""
    labels = normalize_name(name).split(".")
    if len(labels) < 3 or not (labels[0].startswith("_") and labels[1].startswith("_")):
        return None
    return ".".join(labels[2:])


def address_type(value: str) -> str | None:
    """`A` for an IPv4 address, `AAAA` for IPv6, None for anything else (a host name)."""
    try:
        return "A" if ipaddress.ip_address(value.strip()).version == 4 else "AAAA"
    except ValueError:
        return None


# -- record shapes -------------------------------------------------------------------------------


def srv_fields(name: str, target: str, port: int, comment: str) -> dict[str, Any]:
    """The fields of the SRV record we want, as Cloudflare takes them on create and update."""
    return {
        "type": "SRV",
        "name": normalize_name(name),
        "data": {"priority": SRV_PRIORITY, "weight": SRV_WEIGHT, "port": int(port), "target": target},
        "ttl": RECORD_TTL,
        "comment": comment,
    }


def address_fields(name: str, ip: str, comment: str) -> dict[str, Any]:
    """The fields of the A/AAAA record we want (never proxied: Minecraft is not HTTP)."""
    kind = address_type(ip)
    if kind is None:
        raise DriverError("bad_address", f"{ip!r} is not an IP address")
    return {
        "type": kind,
        "name": normalize_name(name),
        "content": str(ipaddress.ip_address(ip.strip())),
        "ttl": RECORD_TTL,
        "proxied": False,
        "comment": comment,
    }


def matches(record: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a stored record already says what `wanted` (from `srv_fields`/`address_fields`) says."""
    if record.get("type") != wanted["type"] or record.get("comment") != wanted["comment"]:
        return False
    if record.get("ttl") != wanted["ttl"]:
        return False
    if wanted["type"] == "SRV":
        data = record.get("data") or {}
        want = wanted["data"]
        return (
            data.get("priority") == want["priority"]
            and data.get("weight") == want["weight"]
            and data.get("port") == want["port"]
            and isinstance(data.get("target"), str)
            and normalize_name(data["target"]) == normalize_name(want["target"])
        )
    return record.get("content") == wanted["content"] and bool(record.get("proxied")) == wanted["proxied"]


# -- DNS plans -----------------------------------------------------------------------------------


def _not_ours(record: Mapping[str, Any]) -> DriverError:
    return DriverError(
        "record_not_ours",
        f"{record.get('type')} record {record.get('name')} (id {record.get('id')}) is not ZLH's: "
        f"its comment is {record.get('comment')!r}",
    )


@dataclass(frozen=True)
class UpsertPlan:
    """What to do to the records at one name: `keep` (nothing to write), else `update` one of ours
    in place or `create` one; in both cases `delete` our duplicates and our record of the other
    address family."""

    keep: Mapping[str, Any] | None = None
    update: Mapping[str, Any] | None = None
    create: bool = False
    delete: tuple[Mapping[str, Any], ...] = ()


def plan_upsert(at_name: Iterable[Mapping[str, Any]], wanted: Mapping[str, Any]) -> UpsertPlan:
    """Plan the upsert of `wanted` over the records already at its name (any types).

    The types it manages are SRV for an SRV record and both A and AAAA for an address record;
    a managed record without `wanted["comment"]` raises `record_not_ours`.
    """
    kinds = ADDRESS_TYPES if wanted["type"] in ADDRESS_TYPES else frozenset({wanted["type"]})
    managed = [r for r in at_name if r.get("type") in kinds]
    for record in managed:
        if record.get("comment") != wanted["comment"]:
            raise _not_ours(record)
    same_type = [r for r in managed if r.get("type") == wanted["type"]]
    other_family = tuple(r for r in managed if r.get("type") != wanted["type"])
    if not same_type:
        return UpsertPlan(create=True, delete=other_family)
    first, dupes = same_type[0], tuple(same_type[1:])
    if matches(first, wanted) and not dupes and not other_family:
        return UpsertPlan(keep=first)
    return UpsertPlan(update=first, delete=dupes + other_family)


def plan_remove(at_name: Iterable[Mapping[str, Any]], comment: str) -> list[Mapping[str, Any]]:
    """The records to delete at one name: every SRV/A/AAAA record, all of which must be ours."""
    managed = [r for r in at_name if r.get("type") in MANAGED_TYPES]
    for record in managed:
        if record.get("comment") != comment:
            raise _not_ours(record)
    return managed


# -- proxy plans ---------------------------------------------------------------------------------



# -- records kept as a list (the local file, the in-memory fake) -------------------------------


def record_id(name: str) -> str:
    """A deterministic Cloudflare-style id (32 hex characters) for a record name."""
    return hashlib.sha256(normalize_name(name).encode()).hexdigest()[:32]


def stored_record(wanted: Mapping[str, Any], keep_id: str | None) -> dict[str, Any]:
    """A record as a list-backed provider stores it: Cloudflare's shape (`content` and `priority` spelled
    out for SRV), with the id it had or a deterministic one."""
    if wanted["type"] != "SRV":
        return {"id": keep_id or record_id(f"{wanted['name']} {wanted['type']}"), **wanted}
    data = wanted["data"]
    return {"id": keep_id or record_id(wanted["name"]), "type": "SRV", "name": wanted["name"],
            "content": f"{data['weight']} {data['port']} {data['target']}", "priority": data["priority"],
            "data": dict(data), "ttl": wanted["ttl"], "proxied": False, "comment": wanted["comment"]}


def name_of(record: Mapping[str, Any]) -> str | None:
    name = record.get("name")
    return normalize_name(name) if isinstance(name, str) else None


def upsert_in(records: list[dict[str, Any]], wanted: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, dict]:
    """Apply an upsert to a list of records: `(the new list, or None if unchanged, the record)`."""
    plan = plan_upsert([r for r in records if name_of(r) == wanted["name"]], wanted)
    if plan.keep is not None:
        return None, dict(plan.keep)
    drop = {id(r) for r in plan.delete}
    if plan.update is not None:
        kept = plan.update.get("id")
        record = stored_record(wanted, kept if isinstance(kept, str) and kept else None)
        return [record if r is plan.update else r for r in records if id(r) not in drop], record
    record = stored_record(wanted, None)
    return [r for r in records if id(r) not in drop] + [record], record


def remove_in(records: list[dict[str, Any]], name: str, comment: str) -> tuple[list[dict[str, Any]] | None, bool]:
    """Apply a removal to a list of records: `(the new list, or None if unchanged, whether anything went)`."""
    wanted = normalize_name(name)
    drop = {id(r) for r in plan_remove([r for r in records if name_of(r) == wanted], comment)}
    if not drop:
        return None, False
    return [r for r in records if id(r) not in drop], True

@dataclass(frozen=True)
class ProxyMap:
    """A proxy's routing, whatever stores it.

    `servers` is `name -> host:port`; `forced` is `host -> [server names]`; `marks` and
    `forced_marks` hold the ownership comment of the entries that carry one; `fallbacks` is
    Velocity's `try` list (servers tried when no forced host matches), never written by us.
    """

    servers: dict[str, str] = field(default_factory=dict)
    forced: dict[str, list[str]] = field(default_factory=dict)
    marks: dict[str, str] = field(default_factory=dict)
    forced_marks: dict[str, str] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()


def find_key(mapping: Mapping[str, Any], key: str) -> str | None:
    """The key of `mapping` equal to `key` ignoring case, if any."""
    wanted = key.lower()
    return next((k for k in mapping if k.lower() == wanted), None)


def _check_name(kind: str, value: str, forbidden: str = "\"'\\[] \n\r\t") -> None:
    if not value or any(c in value for c in forbidden):
        raise DriverError("bad_proxy_entry", f"not a usable {kind}: {value!r}")


def plan_register(current: ProxyMap, server: str, address: str, forced_host: str | None, comment: str) -> ProxyMap:
    """The proxy map after registering `server -> address` (and `forced_host -> [server]`)."""
    _check_name("server name", server)
    _check_name("address", address, forbidden="\"'\\ \n\r\t")
    if server.lower() == "try":
        raise DriverError("bad_proxy_entry", "`try` is Velocity's fallback list, not a server name")
    servers, forced = dict(current.servers), {h: list(s) for h, s in current.forced.items()}
    marks, forced_marks = dict(current.marks), dict(current.forced_marks)
    key = find_key(servers, server)
    if key is not None and marks.get(key) != comment:
        raise DriverError(
            "record_not_ours", f"proxy server {key!r} is not ZLH's (mark {marks.get(key)!r}); left as it is"
        )
    host_key = None
    if forced_host is not None:
        _check_name("forced host", forced_host)
        forced_host = normalize_name(forced_host)
        host_key = find_key(forced, forced_host)
        if host_key is not None and forced_marks.get(host_key) != comment:
            raise DriverError(
                "record_not_ours",
                f"forced host {host_key!r} is not ZLH's (mark {forced_marks.get(host_key)!r}); left as it is",
            )
    name = key or server
    servers[name] = address
    marks[name] = comment
    for host in [h for h, mark in forced_marks.items() if mark == comment and h != host_key]:
        forced.pop(host, None)
        forced_marks.pop(host)
    if forced_host is not None:
        host = host_key or forced_host
        forced[host] = [name]
        forced_marks[host] = comment
    return replace(current, servers=servers, forced=forced, marks=marks, forced_marks=forced_marks)


def plan_unregister(current: ProxyMap, server: str, comment: str) -> ProxyMap | None:
    """The proxy map after removing `server` and our forced hosts for it; None if nothing is there."""
    servers, forced = dict(current.servers), {h: list(s) for h, s in current.forced.items()}
    marks, forced_marks = dict(current.marks), dict(current.forced_marks)
    key = find_key(servers, server)
    lowered = server.lower()
    ours_forced = [
        h
        for h, mark in forced_marks.items()
        if mark == comment and any(t.lower() == lowered for t in forced.get(h, []))
    ]
    if key is None and not ours_forced:
        return None
    if key is not None:
        if marks.get(key) != comment:
            raise DriverError(
                "record_not_ours", f"proxy server {key!r} is not ZLH's (mark {marks.get(key)!r}); left as it is"
            )
        for host, targets in forced.items():
            if host not in ours_forced and any(t.lower() == lowered for t in targets):
                raise DriverError(
                    "record_not_ours",
                    f"forced host {host!r}, which is not ZLH's, routes to {key!r}: fix it by hand before removal",
                )
        if any(t.lower() == lowered for t in current.fallbacks):
            raise DriverError("record_not_ours", f"the proxy's `try` list names {key!r}: fix it by hand before removal")
        del servers[key]
        marks.pop(key, None)
    for host in ours_forced:
        forced.pop(host, None)
        forced_marks.pop(host)
    return replace(current, servers=servers, forced=forced, marks=marks, forced_marks=forced_marks)
