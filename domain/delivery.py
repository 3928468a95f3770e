"""The delivery log: one `Delivery` per (triggering event, channel), the dedupe key.

`Attempting` is recorded before each send and its outcome after, so a crash
between the two resends at most once; a delivery already `sent`, `failed` or
`not_sent` is never sent again, whatever replays or rebuilds happen.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError
from domain.ids import derive

FINAL = ("sent", "failed", "not_sent")


def delivery_id(source_id: UUID, source_version: int, channel: str) -> UUID:
    return derive("delivery", source_id, source_version, channel)


class Delivery(Aggregate):
    TOPIC = "zlh.Delivery"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Delivery.Event"

    class Requested(Event, Aggregate.Created):
        TOPIC = "zlh.Delivery.Requested"
        source_id: UUID
        source_version: int
        channel: str
        kind: str
        message: dict[str, Any]

    class Attempting(Event):
        TOPIC = "zlh.Delivery.Attempting"
        attempt: int

    class Sent(Event):
        TOPIC = "zlh.Delivery.Sent"
        detail: str

    class RetryScheduled(Event):
        TOPIC = "zlh.Delivery.RetryScheduled"
        detail: str
        retry_at: datetime

    class Failed(Event):
        TOPIC = "zlh.Delivery.Failed"
        detail: str

    class NotSent(Event):
        TOPIC = "zlh.Delivery.NotSent"
        reason: str

    @staticmethod
    def create_id(source_id: UUID, source_version: int, channel: str) -> UUID:
        return delivery_id(source_id, source_version, channel)

    @event(Requested)
    def __init__(self, source_id: UUID, source_version: int, channel: str, kind: str,
                 message: dict[str, Any]) -> None:
        self.source_id, self.source_version = source_id, source_version
        self.channel, self.kind, self.message = channel, kind, message
        self.status = "pending"
        self.attempts = 0
        self.retry_at: datetime | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL

    def attempt(self) -> None:
        if self.is_final:
            raise IllegalTransitionError(f"delivery is {self.status}")
        self._attempting(attempt=self.attempts + 1)

    def sent(self, detail: str) -> None:
        self._check_open()
        self._sent(detail=detail)

    def retry_later(self, detail: str, retry_at: datetime) -> None:
        self._check_open()
        self._retry_scheduled(detail=detail, retry_at=retry_at)

    def fail(self, detail: str) -> None:
        self._check_open()
        self._failed(detail=detail)

    def not_sent(self, reason: str) -> None:
        self._check_open()
        self._not_sent(reason=reason)

    def _check_open(self) -> None:
        if self.is_final:
            raise IllegalTransitionError(f"delivery is already {self.status}")

    @event(Attempting)
    def _attempting(self, attempt: int) -> None:
        self.attempts = attempt
        self.status = "attempting"

    @event(Sent)
    def _sent(self, detail: str) -> None:
        self.status = "sent"

    @event(RetryScheduled)
    def _retry_scheduled(self, detail: str, retry_at: datetime) -> None:
        self.status = "retrying"
        self.retry_at = retry_at

    @event(Failed)
    def _failed(self, detail: str) -> None:
        self.status = "failed"

    @event(NotSent)
    def _not_sent(self, reason: str) -> None:
        self.status = "not_sent"
