"""`FakeCloudflare`: Cloudflare's v4 DNS records API as an ASGI app, for the official `cloudflare` library.

Served at `/client/v4` (point the library's `base_url` at `SERVER/client/v4`):
- `GET /zones/{zone_id}` and `GET /user/tokens/verify`;
- `GET /zones/{zone_id}/dns_records`: filters `type`, `name` / `name.exact|contains|startswith|endswith`,
  `content[.…]`, `comment` / `comment.exact|contains|startswith|endswith|present|absent` (all
  case-insensitive, as Cloudflare documents), `proxied`, combined by `match=all|any`; `order`
  (`type|name|content|ttl|proxied`) and `direction`; `page` / `per_page` (default 100) with
  `result_info` {page, per_page, count, total_count, total_pages}; a page past the end is empty;
- `POST .../dns_records`, `GET|PUT|PATCH|DELETE .../dns_records/{id}` (PUT replaces, PATCH merges).

Answers use Cloudflare's envelope `{"success", "errors", "messages", "result"}`. Records carry
server-made 32-hex ids, `created_on` / `modified_on`, `comment` (null when none), `tags`, `meta`,
`proxiable`; an SRV record's `content` is `"WEIGHT PORT TARGET"` with `priority` beside `data`.
Names are lower-cased, a relative name gets the zone appended, `@` is the apex.

Errors, with codes seen from the real API (the exact chain codes of validation failures are
approximations): no or malformed `Authorization` 400 [6003] with chain [6111]; unknown token 401
[9109] "Invalid access token"; a token not granted the zone 403 [10000] "Authentication error";
unknown zone 404 [7003]; unknown record 404 [81044] "Record does not exist."; an identical record
400 [81058]; a CNAME beside other records 400 [81053], a record beside a CNAME 400 [81054];
validation 400 [1004] "DNS Validation Error" with an `error_chain` ([9000] name, [9005]/[9006]
address, [9020] type, [9021] TTL, [9041] proxied, [9101] SRV data); bad JSON 400 [6007].

Fault injection: `fail_next(count, status=429, retry_after=1, method=None)` makes the next `count`
matching requests answer `status` (429 with `Retry-After` and [971], 5xx with [10000]) before
anything else is checked. `requests` logs `(method, path, query, status)` for every request.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SUPPORTED_TYPES = {
    "A", "AAAA", "CAA", "CERT", "CNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS",
    "OPENPGPKEY", "PTR", "SMIMEA", "SRV", "SSHFP", "SVCB", "TLSA", "TXT", "URI",
}  # fmt: skip
PROXIABLE = {"A", "AAAA", "CNAME"}
_LABEL = re.compile(r"^(\*|@|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake answered."""

    method: str
    path: str
    query: str
    status: int


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    method: str | None


class ApiError(Exception):
    """An error answer: HTTP status and Cloudflare error objects."""

    def __init__(self, status: int, code: int, message: str, chain: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"code": code, "message": message}
        if chain:
            self.error["error_chain"] = [{"code": c, "message": m} for c, m in chain]


def _validation(code: int, message: str) -> ApiError:
    return ApiError(400, 1004, "DNS Validation Error", [(code, message)])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeCloudflare:
    """In-memory Cloudflare DNS; see the module docstring.

    `zones` maps zone id -> zone name; `tokens` maps an API token -> the zone ids it may use
    (None: every zone).
    """

    def __init__(self, zones: dict[str, str], tokens: dict[str, set[str] | None]) -> None:
        self.zones = {zid: name.lower().rstrip(".") for zid, name in zones.items()}
        self.tokens = dict(tokens)
        self.records: dict[str, dict[str, dict[str, Any]]] = {zid: {} for zid in zones}
        self.requests: list[LoggedRequest] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        base = "/client/v4"
        self.app = Starlette(
            routes=[
                Route(f"{base}/user/tokens/verify", self._verify_token, methods=["GET"]),
                Route(f"{base}/zones/{{zone_id}}", self._get_zone, methods=["GET"]),
                Route(f"{base}/zones/{{zone_id}}/dns_records", self._collection, methods=["GET", "POST"]),
                Route(
                    f"{base}/zones/{{zone_id}}/dns_records/{{record_id}}",
                    self._member,
                    methods=["GET", "PUT", "PATCH", "DELETE"],
                ),
            ]
        )

    # -- test API ---------------------------------------------------------------------------------

    def fail_next(
        self, count: int = 1, status: int = 429, retry_after: float | str | None = 1, method: str | None = None
    ) -> None:
        """Answer the next `count` requests (of `method`, if given) with `status` instead of serving them."""
        with self._lock:
            for _ in range(count):
                ra = None if retry_after is None or status != 429 else str(retry_after)
                self._faults.append(_Fault(status, ra, method.upper() if method else None))

    def add_record(self, zone_id: str, **fields: Any) -> dict[str, Any]:
        """Store a record directly (e.g. one a person made by hand), validated like a POST."""
        with self._lock:
            return self._create(zone_id, fields)

    def zone_records(self, zone_id: str) -> list[dict[str, Any]]:
        """A copy of every record in the zone, in creation order."""
        with self._lock:
            return [dict(r) for r in self.records[zone_id].values()]

    def statuses(self, method: str | None = None, path_suffix: str = "") -> list[int]:
        """The statuses answered so far, optionally only for one method and paths ending in `path_suffix`."""
        return [
            r.status
            for r in list(self.requests)
            if (method is None or r.method == method) and r.path.endswith(path_suffix)
        ]

    # -- plumbing ---------------------------------------------------------------------------------

    def _answer(
        self, request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> JSONResponse:
        self.requests.append(LoggedRequest(request.method, request.url.path, request.url.query, status))
        return JSONResponse(body, status_code=status, headers=headers)

    def _ok(self, request: Request, result: Any, result_info: dict[str, Any] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
        if result_info is not None:
            body["result_info"] = result_info
        return self._answer(request, 200, body)

    def _fail(self, request: Request, error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"success": False, "errors": [error.error], "messages": [], "result": None}
        return self._answer(request, error.status, body, headers)

    def _fault(self, request: Request) -> JSONResponse | None:
        with self._lock:
            fault = next((f for f in self._faults if f.method in (None, request.method)), None)
            if fault is None:
                return None
            self._faults.remove(fault)
        if fault.status == 429:
            error = ApiError(429, 971, "Please wait and consider throttling your request speed")
            return self._fail(request, error, {"Retry-After": fault.retry_after} if fault.retry_after else None)
        return self._fail(request, ApiError(fault.status, 10000, "Internal error"))

    def _authorize(self, request: Request, zone_id: str | None) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(400, 6003, "Invalid request headers", [(6111, "Invalid format for Authorization header")])
        if token not in self.tokens:
            raise ApiError(401, 9109, "Invalid access token")
        if zone_id is not None:
            allowed = self.tokens[token]
            if zone_id not in self.zones:
                raise ApiError(
                    404, 7003, f"Could not route to /zones/{zone_id}, perhaps your object identifier is invalid?"
                )
            if allowed is not None and zone_id not in allowed:
                raise ApiError(403, 10000, "Authentication error")

    async def _serve(self, request: Request, zone_id: str | None, handler: Any) -> JSONResponse:
        fault = self._fault(request)
        if fault is not None:
            return fault
        try:
            self._authorize(request, zone_id)
            body: dict[str, Any] = {}
            if request.method in ("POST", "PUT", "PATCH"):
                try:
                    body = await request.json()
                except ValueError as exc:
                    raise ApiError(400, 6007, "Malformed JSON in request body") from exc
                if not isinstance(body, dict):
                    raise ApiError(400, 6007, "Malformed JSON in request body")
            with self._lock:
                result = handler(body)
        except ApiError as error:
            return self._fail(request, error)
        if isinstance(result, tuple):
            return self._ok(request, *result)
        return self._ok(request, result)

    # -- routes -----------------------------------------------------------------------------------

    async def _verify_token(self, request: Request) -> JSONResponse:
        return await self._serve(
            request, None, lambda _: {"id": uuid.uuid5(uuid.NAMESPACE_OID, "token").hex, "status": "active"}
        )

    async def _get_zone(self, request: Request) -> JSONResponse:
        zone_id = request.path_params["zone_id"]
        return await self._serve(
            request, zone_id, lambda _: {"id": zone_id, "name": self.zones[zone_id], "status": "active"}
        )

    async def _collection(self, request: Request) -> JSONResponse:
        zone_id = request.path_params["zone_id"]
        if request.method == "POST":
            return await self._serve(request, zone_id, lambda body: self._create(zone_id, body))
        return await self._serve(request, zone_id, lambda _: self._list(zone_id, request))

    async def _member(self, request: Request) -> JSONResponse:
        zone_id, record_id = request.path_params["zone_id"], request.path_params["record_id"]

        def handle(body: dict[str, Any]) -> Any:
            existing = self.records[zone_id].get(record_id)
            if existing is None:
                raise ApiError(404, 81044, "Record does not exist.")
            if request.method == "GET":
                return dict(existing)
            if request.method == "DELETE":
                del self.records[zone_id][record_id]
                return {"id": record_id}
            merged = {**_editable(existing), **body} if request.method == "PATCH" else body
            return self._store(zone_id, merged, existing)

        return await self._serve(request, zone_id, handle)

    # -- the DNS rules ----------------------------------------------------------------------------

    def _full_name(self, zone_id: str, name: Any) -> str:
        zone = self.zones[zone_id]
        if not isinstance(name, str) or not name.strip():
            raise _validation(9000, "DNS name is invalid.")
        name = name.strip().rstrip(".").lower()
        if name == "@":
            return zone
        if name != zone and not name.endswith("." + zone):
            name = f"{name}.{zone}"
        if not all(_LABEL.match(label) for label in name.split(".")) or len(name) > 253:
            raise _validation(9000, "DNS name is invalid.")
        return name

    def _create(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(zone_id, body, None)

    def _store(self, zone_id: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        record = self._validated(zone_id, body)
        others = [r for rid, r in self.records[zone_id].items() if existing is None or rid != existing["id"]]
        same_name = [r for r in others if r["name"] == record["name"]]
        for other in same_name:
            if other["type"] == record["type"] and other["content"] == record["content"]:
                raise ApiError(400, 81058, "An identical record already exists.")
        if record["type"] == "CNAME" and same_name:
            raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        if any(r["type"] == "CNAME" for r in same_name):
            raise ApiError(400, 81054, "A CNAME record with that host already exists.")
        now = _now()
        if existing is None:
            record = {"id": uuid.uuid4().hex, **record, "created_on": now, "modified_on": now}
        else:
            record = {"id": existing["id"], **record, "created_on": existing["created_on"], "modified_on": now}
        if record["comment"] is not None:
            changed = existing is None or existing.get("comment") != record["comment"]
            record["comment_modified_on"] = now if changed else existing.get("comment_modified_on", now)
        self.records[zone_id][record["id"]] = record
        return dict(record)

    def _validated(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("type")
        if kind not in SUPPORTED_TYPES:
            raise _validation(9020, "Invalid DNS record type.")
        name = self._full_name(zone_id, body.get("name"))
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
            raise _validation(9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
        proxied = body.get("proxied", False)
        if not isinstance(proxied, bool):
            raise _validation(9041, "Proxied must be a boolean.")
        if proxied and kind not in PROXIABLE:
            raise _validation(9041, "This DNS record cannot be proxied.")
        comment = body.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment) > 500):
            raise _validation(9101, "Comment must be a string of at most 500 characters.")
        tags = body.get("tags") or []
        record: dict[str, Any] = {
            "zone_id": zone_id,
            "zone_name": self.zones[zone_id],
            "name": name,
            "type": kind,
            "ttl": ttl,
            "proxiable": kind in PROXIABLE,
            "proxied": proxied,
            "locked": False,
            "comment": comment or None,
            "tags": list(tags),
            "settings": {},
            "meta": {"auto_added": False, "managed_by_apps": False, "managed_by_argo_tunnel": False},
        }
        if kind == "SRV":
            data = body.get("data")
            if not isinstance(data, dict):
                raise _validation(9101, "SRV records need data {priority, weight, port, target}.")
            numbers = {k: data.get(k) for k in ("priority", "weight", "port")}
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535 for v in numbers.values()):
                raise _validation(9101, "SRV priority, weight and port must be integers from 0 to 65535.")
            target = data.get("target")
            if not isinstance(target, str) or not target.strip():
                raise _validation(9101, "SRV target must be a host name.")
            target = target.strip().rstrip(".").lower() or "."
            record["data"] = {**numbers, "target": target}
            record["priority"] = numbers["priority"]
            record["content"] = f"{numbers['weight']} {numbers['port']} {target}"
        elif kind in ("A", "AAAA"):
            content = body.get("content")
            try:
                address = ipaddress.ip_address(str(content))
            except ValueError:
                address = None
            if address is None or (address.version == 4) != (kind == "A"):
                code, family = (9005, "IPv4") if kind == "A" else (9006, "IPv6")
                raise _validation(code, f"Content for {kind} record must be a valid {family} address.")
            record["content"] = str(address)
        else:
            content = body.get("content")
            if not isinstance(content, str) or not content:
                raise _validation(9101, f"Content for {kind} record is invalid.")
            record["content"] = content
            if kind in ("MX", "URI"):
                record["priority"] = body.get("priority", 10)
        return record

    def _list(self, zone_id: str, request: Request) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        query = request.query_params
        try:
            page = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "100"))
        except ValueError as exc:
            raise ApiError(400, 1004, "page and per_page must be integers") from exc
        if page < 1 or not 1 <= per_page <= 5_000_000:
            raise ApiError(400, 1004, "page must be >= 1 and per_page from 1 to 5000000")
        tests = _filters(query)
        match_any = query.get("match", "all") == "any"
        records = [
            r
            for r in self.records[zone_id].values()
            if not tests or (any if match_any else all)(test(r) for test in tests)
        ]
        order = query.get("order")
        if order in ("type", "name", "content", "ttl", "proxied"):
            records.sort(key=lambda r: (r[order], r["name"]), reverse=query.get("direction") == "desc")
        start = (page - 1) * per_page
        chunk = [dict(r) for r in records[start : start + per_page]]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(records),
            "total_pages": math.ceil(len(records) / per_page),
        }
        return chunk, info


def _editable(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stored record that a PATCH body merges into."""
    keys = ("name", "type", "content", "ttl", "proxied", "comment", "tags", "data", "priority")
    return {k: record[k] for k in keys if k in record and record[k] is not None}


def _filters(query: Any) -> list[Any]:
    """Predicates for the list filters present in the query string."""
    tests: list[Any] = []
    if "type" in query:
        kind = query["type"].upper()
        tests.append(lambda r: r["type"] == kind)
    for field in ("name", "content", "comment"):
        for op in ("exact", "contains", "startswith", "endswith"):
            key = f"{field}.{op}"
            if key in query:
                tests.append(_text_test(field, op, query[key]))
        if field in query:  # the older spelling: an exact match
            tests.append(_text_test(field, "exact", query[field]))
    if "comment.present" in query:
        tests.append(lambda r: bool(r.get("comment")))
    if "comment.absent" in query:
        tests.append(lambda r: not r.get("comment"))
    if "proxied" in query:
        proxied = query["proxied"].lower() == "true"
        tests.append(lambda r: r["proxied"] == proxied)
    return tests


def _text_test(field: str, op: str, wanted: str) -> Any:
    wanted = wanted.lower()
    if field == "name":
        wanted = wanted.rstrip(".")

    def test(record: dict[str, Any]) -> bool:
        value = (record.get(field) or "").lower()
        if op == "exact":
            return value == wanted
        if op == "contains":
            return wanted in value
        if op == "startswith":
            return value.startswith(wanted)
        return value.endswith(wanted)

    return test
