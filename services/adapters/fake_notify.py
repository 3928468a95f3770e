"""In-memory notification channels for tests: they record and answer from a script.

Each `send` is one attempt: it is appended to `calls`, then answered with the next
outcome from `script` (consumed front first), or `sent` once the script is empty.
Attempts answered `sent` are also appended to `sent`, so `sent` is what a customer or
staff member would have received. Thread-safe: the notifications worker sends from its
own thread while the test reads.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from services.notification_ports import AlertChannel, Email, EmailChannel, Outcome, StaffAlert

M = TypeVar("M")


class _FakeChannel(Generic[M]):
    def __init__(self, script: list[Outcome] | None = None, configured: bool = True) -> None:
        """`configured=False` answers every attempt `not_configured`, as a real channel without settings."""
        self.script: list[Outcome] = list(script or [])
        self.configured = configured
        self.calls: list[tuple[M, str]] = []
        self.sent: list[tuple[M, str]] = []
        self._lock = threading.Lock()

    @property
    def attempts(self) -> int:
        return len(self.calls)

    def send(self, message: M, dedupe_key: str) -> Outcome:
        with self._lock:
            self.calls.append((message, dedupe_key))
            if not self.configured:
                return Outcome("not_configured", "fake channel is not configured")
            outcome = self.script.pop(0) if self.script else Outcome("sent", "sent (fake)")
            if outcome.status == "sent":
                self.sent.append((message, dedupe_key))
            return outcome


class FakeEmailChannel(_FakeChannel[Email], EmailChannel):
    """`EmailChannel` that records emails; `sent` holds `(Email, dedupe_key)` pairs."""


class FakeAlertChannel(_FakeChannel[StaffAlert], AlertChannel):
    """`AlertChannel` that records alerts; `sent` holds `(StaffAlert, dedupe_key)` pairs."""
