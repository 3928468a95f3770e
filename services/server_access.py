"""Use case for access to one server: who may do what on it, the one check every instance route goes through.

`authorize` answers with a `Grant` (the instance, the caller's role on it and the permissions that role
holds) or refuses: a server the caller is not on is `not_found` (404, the same as one that does not
exist, so ids reveal nothing), a server they are on without the permission asked for is
`permission_denied` (403).

Roles: the `owner` and an `admin` (an operator acting on a customer's server) hold every permission and
may manage the server (`MANAGE`: delete it, its subusers, its activity log); a `subuser` holds the
permissions their membership lists and never `MANAGE`.

The membership is read from its own stream by its deterministic id (one indexed read, like the instance
itself), not from the `subusers` read model: a removal or a narrowed permission holds from the very next
request, in every API process. The read model serves the lists (a subuser's servers, a server's subusers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from domain.errors import DomainError
from domain.instance import Instance
from domain.subuser import PERMISSIONS, Subuser, subuser_id
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError

CONSOLE, POWER, FILES_READ, FILES_WRITE = "console", "power", "files.read", "files.write"
BACKUPS, SCHEDULES, SETTINGS = "backups", "schedules", "settings"
#: Only the owner (or an operator) may: delete the server, manage its subusers, read its activity log.
MANAGE = "manage"
#: Any member of the server may: read the server itself.
MEMBER = "member"

Role = Literal["owner", "subuser", "admin"]


class PermissionDeniedError(DomainError):
    code = "permission_denied"

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.extra = {"permission": permission}


@dataclass(frozen=True)
class Grant:
    """What the caller may do on one server, decided for one request."""

    instance: Instance
    user_id: UUID
    role: Role
    permissions: tuple[str, ...]

    @property
    def instance_id(self) -> UUID:
        return self.instance.id

    @property
    def owner_id(self) -> UUID:
        """Whose server it is: operations, quotas and billing gates are the owner's, whoever asks."""
        return self.instance.owner_id

    def request_key(self, key: str | None) -> str | None:
        """An Idempotency-Key in the owner's namespace: a subuser's keys never meet the owner's or another's."""
        if key is None or self.role != "subuser":
            return key
        return f"subuser:{self.user_id}:{key}"


def permission_of(kind: str) -> str:
    """The permission a route needs, checked: one of `PERMISSIONS`, `MANAGE` or `MEMBER`."""
    if kind not in (*PERMISSIONS, MANAGE, MEMBER):
        raise ValueError(f"unknown permission {kind!r}")
    return kind


def authorize(app: ZLH, user_id: UUID, admin: bool, instance_id: UUID, need: str) -> Grant:
    """The caller's grant on `instance_id` if it includes `need`; else `not_found` or `permission_denied`."""
    instance = app.find(instance_id, Instance)
    if instance is None:
        raise NotFoundError("no such instance")
    if admin or instance.owner_id == user_id:
        return Grant(instance, user_id, "admin" if admin and instance.owner_id != user_id else "owner", PERMISSIONS)
    membership = app.find(subuser_id(instance_id, user_id), Subuser)
    if membership is None or not membership.active:
        raise NotFoundError("no such instance")
    grant = Grant(instance, user_id, "subuser", tuple(membership.permissions))
    if need == MANAGE:
        raise PermissionDeniedError("only the server's owner may do this", need)
    if need != MEMBER and need not in grant.permissions:
        raise PermissionDeniedError(f"you need the {need!r} permission on this server; ask its owner", need)
    return grant


#: The permission a schedule's task acts with: a subuser may only make, change, run or delete a schedule whose
#: every task they could do by hand (`schedules` alone does not let one restart the server at 4 am).
TASK_PERMISSIONS = {"command": "console", "power": "power", "backup": "backups"}


def check_task_permissions(grant: Grant, actions: Iterable[str]) -> None:
    """`permission_denied` unless the grant holds the permission of every task action in `actions`."""
    for action in actions:
        need = TASK_PERMISSIONS.get(action)
        if need is not None and need not in grant.permissions:
            raise PermissionDeniedError(f"a schedule with a {action!r} task needs the {need!r} permission too; "
                                        "ask the server's owner", need)
