"""The `Quota` aggregate: what one customer (or one instance) holds of something counted.

One quota per (kind, subject): `instances` per customer, `backups` per instance, `tickets`
per customer and UTC day. It is saved in the same atomic save as the thing it counts, so
two concurrent requests that would both take the last slot write the same stream at the same
version and optimistic concurrency lets only one of them in: the store decides, as it does
for names (domain/name_claim.py). A slot is freed when what held it is gone for good (an
instance or backup deleted); ticket slots never are.

The limit is configuration, so commands take it as an argument; the events record only
which slot was taken or freed. A quota opened for a subject that already had things before
quotas existed starts with those (`held`).
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive

INSTANCES, BACKUPS, TICKETS = "instances", "backups", "tickets"

#: What a customer is told when a quota is reached, by kind ({limit} is filled in).
MESSAGES = {
    INSTANCES: "you have reached the limit of {limit} servers per customer; delete one to make room",
    BACKUPS: "this server has reached the limit of {limit} backups per server; delete one to make room",
    TICKETS: "you have reached the limit of {limit} new support tickets a day (UTC); reply to an open ticket "
             "instead, or open a new one tomorrow",
}


class QuotaExceededError(DomainError):
    """A quota is reached; nothing was written."""

    code = "quota_exceeded"

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(MESSAGES[kind].format(limit=limit))
        self.extra = {"quota": kind, "limit": limit}


def quota_id(kind: str, subject: str) -> UUID:
    return derive("quota", kind, subject)


def ticket_quota_subject(owner_id: UUID, day: str) -> str:
    return f"{owner_id}/{day}"


class Quota(Aggregate):
    TOPIC = "zlh.Quota"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Quota.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.Quota.Opened"
        kind: str
        subject: str
        held: list[UUID]

    class Taken(Event):
        TOPIC = "zlh.Quota.Taken"
        slot: UUID

    class Released(Event):
        TOPIC = "zlh.Quota.Released"
        slot: UUID

    @staticmethod
    def create_id(kind: str, subject: str) -> UUID:
        return quota_id(kind, subject)

    @event(Opened)
    def __init__(self, kind: str, subject: str, held: list[UUID]) -> None:
        self.kind = kind
        self.subject = subject
        self.held = list(held)

    def check_room(self, limit: int | None) -> None:
        """Raise `QuotaExceededError` if no slot is free under `limit` (None: no limit)."""
        if limit is not None and len(self.held) >= limit:
            raise QuotaExceededError(self.kind, limit)

    def take(self, slot: UUID, limit: int | None) -> None:
        """Hold a slot for `slot` (idempotent: a slot already held is not taken twice)."""
        if slot in self.held:
            return
        self.check_room(limit)
        self._taken(slot=slot)

    def release(self, slot: UUID) -> bool:
        """Free `slot`'s place; False if it held none."""
        if slot not in self.held:
            return False
        self._released(slot=slot)
        return True

    @event(Taken)
    def _taken(self, slot: UUID) -> None:
        self.held.append(slot)  # in place: a copy per event made replaying a busy customer's quota quadratic

    @event(Released)
    def _released(self, slot: UUID) -> None:
        self.held = [s for s in self.held if s != slot]
