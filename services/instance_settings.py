"""Use cases for a server's settings (the `settings` permission): renaming it.

A new name follows the create rule (unique among the owner's servers that are not deleted) through the
same `NameClaim` streams: the new name is claimed and the old one released in the one save that renames
the instance, so two renames to one name never both win. The public address keeps the name it was
created with (`edge_name`): renaming never moves DNS or the proxy.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.instance import Instance
from domain.name_claim import NameClaim
from services.infrastructure.store import ZLH
from services.server_access import Grant


@dataclass(frozen=True)
class Renamed:
    position: int


def rename(app: ZLH, grant: Grant, actor_id: UUID, name: str) -> Renamed:
    for _ in range(10):
        instance = app.find(grant.instance_id, Instance)
        assert instance is not None  # authorized a moment ago; instances are never removed from the log
        previous = instance.name
        if not instance.rename(name, actor_id):
            return Renamed(app.head())
        claim = app.find(NameClaim.create_id(instance.owner_id, name), NameClaim)
        if claim is None:
            claim = NameClaim(owner_id=instance.owner_id, name=name, instance_id=instance.id)
        else:
            claim.claim(instance.id)  # name_taken while another live server of the owner has it
        old = app.find(NameClaim.create_id(instance.owner_id, previous), NameClaim)
        extra = [old] if old is not None else []
        if old is not None:
            old.release(instance.id)
        try:
            return Renamed(app.save(instance, claim, *extra)[-1].notification.id)
        except IntegrityError:
            continue  # the server, or one of the names, changed meanwhile: decide again
    raise RuntimeError("too much contention on this server's name")
