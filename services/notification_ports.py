"""Notification ports: customer email and staff alerts, one attempt at a time.

The notifications process manager (`services.workers.notifications`) owns the delivery log,
the dedupe keys and the retries; a channel only makes ONE attempt to deliver one
message and says what happened, as an `Outcome`:

- `sent`: the remote accepted the message;
- `transient`: worth retrying later (connection refused, timeout, SMTP 4xx, HTTP 5xx,
  Discord 429 with its `retry_after`);
- `permanent`: retrying the same message will not help (SMTP 5xx, HTTP 4xx other than 429);
- `not_configured`: the channel has no destination configured; the message is recorded, not sent.

Everything here is pure: value types, the channel protocols and the backoff schedule.
Real adapters live in `services.adapters.smtp` and `services.adapters.discord`, fakes in
`services.adapters.fake_notify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, get_args

OutcomeStatus = Literal["sent", "transient", "permanent", "not_configured"]
AlertLevel = Literal["info", "warning", "critical"]

OUTCOME_STATUSES: frozenset[str] = frozenset(get_args(OutcomeStatus))
ALERT_LEVELS: frozenset[str] = frozenset(get_args(AlertLevel))


@dataclass(frozen=True)
class Email:
    """A plain-text email to one customer address; `reply_to` is where answers go (a ticket's address)."""

    to: str
    subject: str
    body: str
    reply_to: str | None = None


@dataclass(frozen=True)
class StaffAlert:
    """A message for staff; `fields` are (name, value) pairs shown side by side."""

    title: str
    description: str
    fields: tuple[tuple[str, str], ...] = ()
    level: str = "info"  # info | warning | critical


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to.

    `detail` is short, human-readable and safe to store and show to staff: never a
    password, token or webhook URL. `retry_after` is in seconds, set only when the
    remote said how long to wait (e.g. Discord 429).
    """

    status: OutcomeStatus
    detail: str
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")
        if self.retry_after is not None and not self.retry_after >= 0:
            raise ValueError("retry_after must be a non-negative number of seconds")

    @property
    def is_final(self) -> bool:
        """Whether the delivery is settled (anything but `transient`)."""
        return self.status != "transient"


class EmailChannel(Protocol):
    """Sends customer email.

    Contract:
    - `send` makes exactly one attempt to hand `email` to the mail system and blocks
      until it is accepted or has failed (bounded by the adapter's timeout);
    - it never raises for delivery problems (network, remote refusals, not configured):
      it classifies them into an `Outcome` instead;
    - `dedupe_key` identifies the logical message: sending the same (email, key) again,
      e.g. after a crash between attempt and record, must be recognisable as the same
      message (the SMTP adapter derives the Message-ID from it).
    """

    def send(self, email: Email, dedupe_key: str) -> Outcome: ...


class AlertChannel(Protocol):
    """Sends staff alerts.

    Contract: as `EmailChannel` — one attempt, blocks until done, never raises for
    delivery problems, classifies them into an `Outcome`; `dedupe_key` travels with
    the alert so a repeat is recognisable (the Discord adapter puts it in the footer).
    """

    def send(self, alert: StaffAlert, dedupe_key: str) -> Outcome: ...


def backoff(attempt: int, base: float = 1.0, cap: float = 300.0, retry_after: float | None = None) -> float:
    """Seconds to wait before the next attempt, after `attempt` attempts have failed (1-based).

    Capped exponential: `base * 2**(attempt - 1)`, at most `cap`; at least `retry_after`
    when the remote asked for it (the remote's wish wins over the cap: retrying earlier
    would only be refused again). Deterministic: no jitter. Attempts below 1 count as 1.
    """
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be non-negative")
    exponent = min(max(attempt, 1) - 1, 64)  # 2**64 is past any cap; bounding it avoids huge ints
    delay = min(cap, base * 2.0**exponent)
    if retry_after is not None and retry_after > delay:
        delay = float(retry_after)
    return delay
