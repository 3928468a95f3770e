"""`Subuser`: another user's membership of one server, with the permissions its owner gave them.

One stream per (instance, user): its id derives from both, so two invitations of the same person to the
same server write the same stream and optimistic concurrency lets exactly one of them create it. The
user is named by the id their email derives (`domain.ids.user_id_for_email`), known without asking
whether such an account exists: an invitation answers the same for any email, and a membership for an
email nobody has registered yet takes effect when that account is made.

A membership is `Added` once, may be `Removed` and later `Readded`; every event names the instance, the
user and the `actor_id` who did it (the owner, or an operator), for the server's activity log.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive

#: What an owner can let a subuser do on one server. Everything else (deleting the server, its subusers,
#: its activity log, billing) stays the owner's.
PERMISSIONS = ("console", "power", "files.read", "files.write", "backups", "schedules", "settings")


class SubuserRuleError(DomainError):
    """An invitation or a change breaks a rule (an unknown permission, the owner inviting themselves)."""

    code = "validation_error"


class SubuserExistsError(DomainError):
    """The user is a subuser of this server already: change their permissions instead."""

    code = "subuser_exists"


class SubuserNotFoundError(DomainError):
    code = "not_found"


def subuser_id(instance_id: UUID, user_id: UUID) -> UUID:
    return derive("subuser", instance_id, user_id)


def check_permissions(permissions: Iterable[str]) -> list[str]:
    """The permissions as stored: known ones only, each once, in the order of `PERMISSIONS`."""
    given = list(permissions)
    unknown = sorted({p for p in given if p not in PERMISSIONS})
    if unknown:
        raise SubuserRuleError(f"permissions: unknown {', '.join(map(repr, unknown))}; "
                               f"choose from {', '.join(PERMISSIONS)}")
    return [p for p in PERMISSIONS if p in given]


class Subuser(Aggregate):
    TOPIC = "zlh.Subuser"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Subuser.Event"

    class Added(Event, Aggregate.Created):
        TOPIC = "zlh.Subuser.Added"
        instance_id: UUID
        owner_id: UUID
        user_id: UUID
        email: str
        permissions: list[str]
        actor_id: UUID

    class Readded(Event):
        TOPIC = "zlh.Subuser.Readded"
        instance_id: UUID
        user_id: UUID
        email: str
        permissions: list[str]
        actor_id: UUID

    class PermissionsChanged(Event):
        TOPIC = "zlh.Subuser.PermissionsChanged"
        instance_id: UUID
        user_id: UUID
        email: str
        permissions: list[str]
        previous: list[str]
        actor_id: UUID

    class Removed(Event):
        TOPIC = "zlh.Subuser.Removed"
        instance_id: UUID
        user_id: UUID
        email: str
        actor_id: UUID

    @staticmethod
    def create_id(instance_id: UUID, user_id: UUID) -> UUID:
        return subuser_id(instance_id, user_id)

    @classmethod
    def add(cls, instance_id: UUID, owner_id: UUID, user_id: UUID, email: str, permissions: Iterable[str],
            actor_id: UUID) -> Subuser:
        if user_id == owner_id:
            raise SubuserRuleError("email: that is the owner of this server, who may do everything already")
        return cls(instance_id=instance_id, owner_id=owner_id, user_id=user_id, email=email,
                   permissions=check_permissions(permissions), actor_id=actor_id)

    @event(Added)
    def __init__(self, instance_id: UUID, owner_id: UUID, user_id: UUID, email: str, permissions: list[str],
                 actor_id: UUID) -> None:
        self.instance_id, self.owner_id, self.user_id, self.email = instance_id, owner_id, user_id, email
        self.permissions = list(permissions)
        self.active = True

    def readd(self, permissions: Iterable[str], actor_id: UUID) -> None:
        if self.active:
            raise SubuserExistsError(f"{self.email} is a subuser of this server already; change their permissions "
                                     "with PATCH")
        self._readded(instance_id=self.instance_id, user_id=self.user_id, email=self.email,
                      permissions=check_permissions(permissions), actor_id=actor_id)

    def change_permissions(self, permissions: Iterable[str], actor_id: UUID) -> bool:
        """Give exactly `permissions`; False (nothing recorded) if they are the ones held already."""
        self._check_active()
        wanted = check_permissions(permissions)
        if wanted == self.permissions:
            return False
        self._permissions_changed(instance_id=self.instance_id, user_id=self.user_id, email=self.email,
                                  permissions=wanted, previous=list(self.permissions), actor_id=actor_id)
        return True

    def remove(self, actor_id: UUID) -> None:
        self._check_active()
        self._removed(instance_id=self.instance_id, user_id=self.user_id, email=self.email, actor_id=actor_id)

    def _check_active(self) -> None:
        if not self.active:
            raise SubuserNotFoundError("no such subuser")

    @event(Readded)
    def _readded(self, instance_id: UUID, user_id: UUID, email: str, permissions: list[str], actor_id: UUID) -> None:
        self.permissions = list(permissions)
        self.active = True

    @event(PermissionsChanged)
    def _permissions_changed(self, instance_id: UUID, user_id: UUID, email: str, permissions: list[str],
                             previous: list[str], actor_id: UUID) -> None:
        self.permissions = list(permissions)

    @event(Removed)
    def _removed(self, instance_id: UUID, user_id: UUID, email: str, actor_id: UUID) -> None:
        self.permissions = []
        self.active = False
