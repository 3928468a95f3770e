"""Staff alerts to a Discord webhook: one attempt per `send`, its outcome classified.

`ZLH_DISCORD_WEBHOOK_URL` is the webhook's URL (`https://discord.com/api/webhooks/ID/TOKEN`);
unset or empty: every send is `not_configured`. The URL holds the webhook's secret token,
so it never appears in an outcome's detail.

The alert becomes one embed (title, description, colour by level, inline fields, the dedupe
key as footer), cut to Discord's limits; mentions are disabled. The request asks for
`wait=true`, so a 2xx means Discord stored the message (without it Discord may answer 204
for a message it then drops).

Classification, per Discord's documented webhook behaviour:
- 2xx: `sent`;
- 429 (rate limited): `transient`, with `retry_after` from the JSON body's `retry_after`
  (seconds, float), else the `Retry-After` or `X-RateLimit-Reset-After` header;
- 5xx, connection errors, timeouts: `transient`;
- any other status (400 bad payload, 401/403 bad token, 404 webhook deleted, ...): `permanent`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.notification_ports import AlertChannel, Outcome, StaffAlert

USERNAME = "ZLH"
COLORS = {"info": 0x3498DB, "warning": 0xF1C40F, "critical": 0xE74C3C}

# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_payload(alert: StaffAlert, dedupe_key: str) -> dict[str, Any]:
    """The webhook's JSON body for `alert`, within Discord's limits. Pure."""
    fields = [
        {"name": truncate(name.strip() or "-", FIELD_NAME_MAX),
         "value": truncate(value.strip() or "-", FIELD_VALUE_MAX),
         "inline": True}
        for name, value in alert.fields[:FIELDS_MAX]
    ]
    if len(alert.fields) > FIELDS_MAX:  # say so rather than drop silently
        fields[-1] = {"name": "…", "value": f"{len(alert.fields) - FIELDS_MAX + 1} more fields not shown",
                      "inline": False}
    title = truncate(alert.title.strip(), TITLE_MAX)
    footer = truncate(dedupe_key, FOOTER_MAX)
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    description = truncate(alert.description.strip(), max(1, min(DESCRIPTION_MAX, EMBED_TOTAL_MAX - used)))
    embed: dict[str, Any] = {
        "color": COLORS.get(alert.level, COLORS["info"]),
        "fields": fields,
        "footer": {"text": footer},
    }
    if title:  # Discord rejects empty strings where it accepts absent keys
        embed["title"] = title
    if description:
        embed["description"] = description
    return {"username": USERNAME, "embeds": [embed], "allowed_mentions": {"parse": []}}


class DiscordAlertChannel(AlertChannel):
    """`AlertChannel` over a Discord webhook, with `httpx`."""

    def __init__(self, webhook_url: str | None, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        """Raise `ValueError` for a URL that is set but not http(s). An injected `client` is not closed by `close()`."""
        self.webhook_url = (webhook_url or "").strip()
        self.timeout = timeout
        self._secrets: list[str] = []
        if self.webhook_url:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("ZLH_DISCORD_WEBHOOK_URL must be an http(s) URL")
            # The token is the path's last segment: hide it, and the URL and path that contain it.
            token = parts.path.rstrip("/").rpartition("/")[2]
            secrets = {self.webhook_url, parts.path, token if len(token) >= 4 else ""} - {"", "/"}
            self._secrets = sorted(secrets, key=len, reverse=True)
        # `wait=true` added to (not replacing) the URL's own query, e.g. `thread_id`.
        self.url = httpx.URL(self.webhook_url).copy_merge_params({"wait": "true"}) if self.webhook_url else None
        self._owns_client = client is None
        self._client = client
        if self._client is None and self.webhook_url:
            self._client = httpx.Client(timeout=timeout, headers={"User-Agent": "zlh-control-plane"})

    @property
    def configured(self) -> bool:
        return bool(self.webhook_url)

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DiscordAlertChannel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, alert: StaffAlert, dedupe_key: str) -> Outcome:
        """One attempt; never raises for delivery problems."""
        if not self.configured:
            return Outcome("not_configured", "ZLH_DISCORD_WEBHOOK_URL is not set")
        payload = build_payload(alert, dedupe_key)
        if self._client is None or self.url is None:
            return Outcome("transient", "channel is closed")
        try:
            response = self._client.post(self.url, json=payload, timeout=self.timeout)
        except httpx.TimeoutException:
            return Outcome("transient", f"timed out after {self.timeout:g}s")
        except httpx.HTTPError as exc:  # connection refused, reset, protocol errors, ...
            return Outcome("transient", self._scrub(f"{type(exc).__name__}: {exc}"))
        return self._classify(response)

    def _classify(self, response: httpx.Response) -> Outcome:
        status = response.status_code
        if 200 <= status < 300:
            message = _json(response).get("id")
            return Outcome("sent", f"HTTP {status}" + (f", message {message}" if message else ""))
        reason = self._scrub(_reason(response))
        if status == 429:
            return Outcome("transient", f"HTTP 429 rate limited: {reason}", retry_after=_retry_after(response))
        if status >= 500:
            return Outcome("transient", f"HTTP {status}: {reason}")
        return Outcome("permanent", f"HTTP {status}: {reason}")

    def _scrub(self, detail: str) -> str:
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        detail = " ".join(detail.split())
        return truncate(detail, 300)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _reason(response: httpx.Response) -> str:
    """Discord's `message` (and `code`) when it sent JSON, else the HTTP reason phrase."""
    body = _json(response)
    message = body.get("message")
    if isinstance(message, str) and message:
        code = body.get("code")
        return truncate(message, 120) + (f" (code {code})" if isinstance(code, int) and code else "")
    return response.reason_phrase or "no reason given"


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from the JSON body's `retry_after`, else `Retry-After`, else `X-RateLimit-Reset-After`."""
    value = _json(response).get("retry_after")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    for header in ("Retry-After", "X-RateLimit-Reset-After"):
        seconds = _seconds(response.headers.get(header))
        if seconds is not None:
            return seconds
    return None


def _seconds(value: str | None) -> float | None:
    """A header's delay: a number of seconds, or (Retry-After) an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        return max(0.0, seconds)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
