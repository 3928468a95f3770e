"""The `NameClaim` aggregate: one per (owner, name), so name uniqueness is a store guarantee.

Its id is derived from the owner and the name; two concurrent creates with the
same name write the same stream, and optimistic concurrency lets one win.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import NameTakenError
from domain.ids import name_claim_id


class NameClaim(Aggregate):
    TOPIC = "zlh.NameClaim"

    class Event(Aggregate.Event):
        TOPIC = "zlh.NameClaim.Event"

    class Claimed(Event, Aggregate.Created):
        TOPIC = "zlh.NameClaim.Claimed"
        owner_id: UUID
        name: str
        instance_id: UUID

    class Reclaimed(Event):
        TOPIC = "zlh.NameClaim.Reclaimed"
        instance_id: UUID

    class Released(Event):
        TOPIC = "zlh.NameClaim.Released"
        instance_id: UUID

    @staticmethod
    def create_id(owner_id: UUID, name: str) -> UUID:
        return name_claim_id(owner_id, name)

    @event(Claimed)
    def __init__(self, owner_id: UUID, name: str, instance_id: UUID) -> None:
        self.owner_id = owner_id
        self.name = name
        self.instance_id: UUID | None = instance_id

    def claim(self, instance_id: UUID) -> None:
        if self.instance_id is not None:
            raise NameTakenError(f"you already have an instance named {self.name!r}")
        self._reclaimed(instance_id=instance_id)

    def release(self, instance_id: UUID) -> None:
        if self.instance_id == instance_id:
            self._released(instance_id=instance_id)

    @event(Reclaimed)
    def _reclaimed(self, instance_id: UUID) -> None:
        self.instance_id = instance_id

    @event(Released)
    def _released(self, instance_id: UUID) -> None:
        self.instance_id = None
