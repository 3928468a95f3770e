"""`CloudflareDns`: the `DnsProvider` port over Cloudflare's v4 DNS API (`ZLH_DNS=cloudflare`).

It owns the zone's game-server records on Cloudflare: SRV records
`_minecraft._tcp.NAME-SHORTID.ZONE` and, for an SRV target given as an IP address,
the A/AAAA record that names it. It talks through the official `cloudflare`
library (v5: `Cloudflare(api_token=, base_url=)`, `client.dns.records.list /
create / edit / delete(zone_id=...)`, list filters sent as `name.exact=...`),
using its raw responses so records come back exactly as Cloudflare shaped them.

Settings it takes (the container passes them from `ZLH_CLOUDFLARE_API_URL`,
`ZLH_CLOUDFLARE_TOKEN`, `ZLH_CLOUDFLARE_ZONE_ID` and `ZLH_DNS_ZONE`): the API's
base URL (default `https://api.cloudflare.com/client/v4`; a test server works),
the API token (DNS edit on the zone), the zone id and the zone name.

Records:
- every record it creates carries `comment: zlh instance INSTANCE_ID`; a record
  of a managed type without the caller's comment is never edited or deleted
  (`record_not_ours`), see `services.ports.DnsProvider`;
- an SRV record cannot point at an address, so `upsert_srv(name, ip, ...)` first
  upserts an A (or AAAA) record at the SRV's host, `NAME-SHORTID.ZONE`, and points
  the SRV there. That name is also the proxy's forced host, so the Minecraft
  client's handshake names the same host whether it sends the name typed or the
  SRV target. `remove` of the SRV name removes our address record with it;
- upserts are idempotent by (name, type): list the name, then create, or edit
  (PATCH) our record in place, or do nothing when it already says the same.

Rate limits: Cloudflare allows 1,200 requests per 5 minutes per token, and a 429
blocks every call for a while. A token bucket holds the client under that budget
(burst + refill x window <= budget, so no 5-minute window can exceed it). A 429
pauses the whole adapter until `Retry-After`, then the request is retried, at most
`max_attempts` times in all; any wait longer than `max_wait` seconds fails fast
with `cloudflare_rate_limited` instead of blocking a worker. A 429 was refused
before it ran, so any method is retried; a 5xx or a transport failure is retried
only for reads: a write whose outcome is unknown is never blindly repeated.

Failures raise `DriverError` with a stable code and Cloudflare's own error codes
in the message (`[81053] An A, AAAA, or CNAME record with that host already
exists. ...`): `cloudflare_unauthorized` (401/403), `cloudflare_rate_limited`,
`cloudflare_unavailable` (5xx, timeouts, unreachable), `cloudflare_error`
(anything else Cloudflare refused). The token never appears in a message or repr.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import cloudflare
import httpx

from services.adapters.edge_rules import (
    ADDRESS_TYPES,
    UpsertPlan,
    address_fields,
    address_type,
    normalize_name,
    plan_remove,
    plan_upsert,
    srv_fields,
    srv_host,
)
from services.ports import DriverError

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
#: Cloudflare's documented per-token budget: 1,200 requests per 5 minutes.
BUDGET_REQUESTS = 1200
BUDGET_WINDOW = 300.0


class TokenBucket:
    """A thread-safe token bucket: `capacity` tokens, refilled at `rate` per second of `clock`."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or rate <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and a positive rate")
        self.capacity = capacity
        self.rate = rate
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, max_wait: float) -> float | None:
        """Reserve one token; return the seconds to wait before using it, or None (nothing reserved)
        if that wait would exceed `max_wait`."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            if wait > max_wait:
                return None
            self._tokens -= 1
            return wait


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date; None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe_errors(body: object) -> str:
    """Cloudflare's `errors` (with their `error_chain`) as `[code] message; [code] message`."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ""
    parts: list[str] = []

    def walk(errors: list[Any]) -> None:
        for error in errors:
            if isinstance(error, dict):
                parts.append(f"[{error.get('code')}] {str(error.get('message', '')).strip()}")
                if isinstance(error.get("error_chain"), list):
                    walk(error["error_chain"])

    walk(body["errors"])
    return "; ".join(parts)


class CloudflareDns:
    """`DnsProvider` over one Cloudflare zone; see the module docstring."""

    def __init__(
        self,
        *,
        token: str,
        zone_id: str,
        zone_name: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 15.0,
        page_size: int = 100,
        max_attempts: int = 4,
        max_wait: float = 60.0,
        budget: int = BUDGET_REQUESTS,
        budget_window: float = BUDGET_WINDOW,
        burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        http_client: httpx.Client | None = None,
    ) -> None:
        if not token or not zone_id or not zone_name:
            raise ValueError("CloudflareDns needs a token, a zone id and a zone name")
        if not 0 < burst < budget:
            raise ValueError("the burst must be positive and below the budget")
        self.zone_id = zone_id
        self.zone = normalize_name(zone_name)
        self.api_url = api_url.rstrip("/")
        self.page_size = page_size
        self.max_attempts = max(1, max_attempts)
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._bucket = TokenBucket(burst, (budget - burst) / budget_window, clock)
        self._blocked_until = 0.0
        self._lock = threading.Lock()
        self._client = cloudflare.Cloudflare(
            api_token=token,
            base_url=self.api_url,
            max_retries=0,  # retries are ours: budgeted, and never for a write of unknown outcome
            timeout=timeout,
            http_client=http_client or httpx.Client(timeout=timeout, trust_env=False),
        )
        # The library falls back to CLOUDFLARE_API_KEY / CLOUDFLARE_EMAIL from the environment and would
        # prefer them to the token; only the token we were given may authenticate.
        self._client.api_key = None
        self._client.api_email = None
        self._client.user_service_key = None
        self._records = self._client.dns.records.with_raw_response

    def __repr__(self) -> str:
        return f"CloudflareDns(zone={self.zone!r}, api_url={self.api_url!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    # -- DnsProvider --------------------------------------------------------------------------------

    def upsert_srv(self, name: str, target: str, port: int, comment: str) -> dict[str, Any]:
        name = self._in_zone(name)
        host = srv_host(name) if address_type(target) is not None else None
        if address_type(target) is not None and host is None:
            raise DriverError("bad_record", f"{name} has no `_service._proto.` labels to name the target by")
        wanted = srv_fields(name, host or target, port, comment)
        plan = plan_upsert(self._records_at(name), wanted)  # refuses a foreign SRV before anything is written
        if host is not None:
            self.upsert_address(host, target, comment)
        return self._apply(plan, wanted)

    def upsert_address(self, name: str, ip: str, comment: str) -> dict[str, Any]:
        wanted = address_fields(self._in_zone(name), ip, comment)
        return self._apply(plan_upsert(self._records_at(wanted["name"]), wanted), wanted)

    def remove(self, name: str, comment: str) -> bool:
        name = self._in_zone(name)
        doomed = list(plan_remove(self._records_at(name), comment))
        host = srv_host(name)
        if host is not None and host != name:
            doomed += [
                r for r in self._records_at(host) if r.get("type") in ADDRESS_TYPES and r.get("comment") == comment
            ]
        for record in doomed:
            self._delete(str(record["id"]))
        return bool(doomed)

    def list_records(self) -> list[dict[str, Any]]:
        return self._list()

    # -- the API -------------------------------------------------------------------------------------

    def _in_zone(self, name: str) -> str:
        name = normalize_name(name)
        if name != self.zone and not name.endswith("." + self.zone):
            raise DriverError("bad_record", f"{name} is not in the zone {self.zone}")
        return name

    def _records_at(self, name: str) -> list[dict[str, Any]]:
        """Every record named `name`, whatever its type or comment."""
        return [r for r in self._list(name={"exact": name}) if normalize_name(str(r.get("name", ""))) == name]

    def _list(self, **filters: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self._call(
                "GET dns_records",
                lambda p=page: self._records.list(zone_id=self.zone_id, page=p, per_page=self.page_size, **filters),
                safe=True,
            )
            result = body.get("result")
            if not isinstance(result, list):
                raise DriverError("cloudflare_error", "Cloudflare listed DNS records without a `result` list")
            out.extend(r for r in result if isinstance(r, dict))
            info = body.get("result_info") if isinstance(body.get("result_info"), dict) else {}
            total_pages = info.get("total_pages")
            if isinstance(total_pages, int):
                if page >= total_pages:
                    return out
            elif len(result) < self.page_size:
                return out
            page += 1

    def _apply(self, plan: UpsertPlan, wanted: Mapping[str, Any]) -> dict[str, Any]:
        if plan.keep is not None:
            return dict(plan.keep)
        for record in plan.delete:
            self._delete(str(record["id"]))
        if plan.update is not None:
            record_id = str(plan.update["id"])
            return self._result(
                self._call("PATCH dns_records", lambda: self._records.edit(record_id, zone_id=self.zone_id, **wanted))
            )
        return self._result(
            self._call("POST dns_records", lambda: self._records.create(zone_id=self.zone_id, **wanted))
        )

    def _delete(self, record_id: str) -> None:
        try:
            self._call("DELETE dns_records", lambda: self._records.delete(record_id, zone_id=self.zone_id))
        except DriverError as exc:
            if exc.code == "cloudflare_error" and "[81044]" in exc.message:
                return  # already gone: deleting is idempotent
            raise

    @staticmethod
    def _result(body: dict[str, Any]) -> dict[str, Any]:
        result = body.get("result")
        if not isinstance(result, dict):
            raise DriverError("cloudflare_error", "Cloudflare answered without the record")
        return result

    def _call(self, what: str, request: Callable[[], Any], *, safe: bool = False) -> dict[str, Any]:
        """One API request under the budget, with the retries the module docstring describes.

        `safe`: the request may be repeated after a 5xx or a transport failure (a read).
        """
        for attempt in range(1, self.max_attempts + 1):
            self._wait_turn(what)
            last = attempt == self.max_attempts
            try:
                response = request()
            except cloudflare.RateLimitError as exc:
                delay = retry_after_seconds(exc.response.headers)
                delay = 1.0 * 2 ** (attempt - 1) if delay is None else delay
                with self._lock:
                    self._blocked_until = max(self._blocked_until, self._clock() + delay)
                if last:
                    raise DriverError(
                        "cloudflare_rate_limited",
                        f"Cloudflare rate-limited {what} {attempt} times: {describe_errors(exc.body)}",
                    ) from exc
                continue
            except cloudflare.APIStatusError as exc:
                if exc.status_code >= 500 and safe and not last:
                    self._sleep(min(self.max_wait, 0.5 * 2 ** (attempt - 1)))
                    continue
                raise self._status_error(what, exc) from exc
            except cloudflare.APIConnectionError as exc:  # timeouts included
                if safe and not last:
                    self._sleep(min(self.max_wait, 0.5 * 2 ** (attempt - 1)))
                    continue
                raise DriverError(
                    "cloudflare_unavailable", f"{what}: cannot reach Cloudflare: {type(exc).__name__}"
                ) from exc
            body = response.json()
            if not isinstance(body, dict) or body.get("success") is False:
                raise DriverError("cloudflare_error", f"{what}: {describe_errors(body) or 'unsuccessful answer'}")
            return body
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _wait_turn(self, what: str) -> None:
        """Sleep until the budget and any 429 pause allow one more request, or fail fast."""
        with self._lock:
            paused = max(0.0, self._blocked_until - self._clock())
        if paused > self.max_wait:
            raise DriverError("cloudflare_rate_limited", f"{what}: Cloudflare asked us to pause for {paused:.0f}s more")
        wait = self._bucket.take(self.max_wait - paused)
        if wait is None:
            raise DriverError("cloudflare_rate_limited", f"{what}: the client-side request budget is spent")
        if max(paused, wait) > 0:
            self._sleep(max(paused, wait))

    def _status_error(self, what: str, exc: cloudflare.APIStatusError) -> DriverError:
        detail = describe_errors(exc.body) or f"HTTP {exc.status_code}"
        message = f"{detail} (HTTP {exc.status_code} on {what})"
        if exc.status_code in (401, 403):
            return DriverError("cloudflare_unauthorized", message)
        if exc.status_code >= 500:
            return DriverError("cloudflare_unavailable", message)
        return DriverError("cloudflare_error", message)
