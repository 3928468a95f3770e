"""Use cases for a server's subusers: invite by email, change permissions, remove.

The caller's right to manage the server (owner or operator) is checked before, by
`services.server_access.authorize(..., MANAGE)`; these take its `Grant`. An invitation names the person
by email and answers the same whether or not an account with that email exists (see domain/subuser.py):
the API never tells an owner which emails have accounts. Two invitations of one person at once create
one membership: the second finds the stream taken and answers 409 `subuser_exists`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.ids import user_id_for_email
from domain.lifecycle import InstanceStatus
from domain.subuser import Subuser, SubuserExistsError, SubuserNotFoundError, subuser_id
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError
from services.server_access import Grant


@dataclass(frozen=True)
class Written:
    user_id: UUID
    position: int  # the log position of the change (None-like 0 when nothing changed)


def normalize_email(email: str) -> str:
    """The form memberships are keyed and shown by (an account's id derives from it the same way)."""
    return email.strip().lower()


def invite(app: ZLH, grant: Grant, actor_id: UUID, email: str, permissions: Iterable[str]) -> Written:
    if grant.instance.status in (InstanceStatus.DELETING, InstanceStatus.DELETED):
        raise NotFoundError("no such instance")
    email = normalize_email(email)
    user_id = user_id_for_email(email)
    wanted = list(permissions)
    for _ in range(10):
        membership = app.find(subuser_id(grant.instance_id, user_id), Subuser)
        if membership is None:
            membership = Subuser.add(grant.instance_id, grant.owner_id, user_id, email, wanted, actor_id)
        else:
            membership.readd(wanted, actor_id)  # 409 subuser_exists while it is active
        try:
            return Written(user_id, app.save(membership)[-1].notification.id)
        except IntegrityError:
            continue  # another invitation (or change) of this person was saved first: decide again
    raise SubuserExistsError("this person's membership is changing right now; try again")


def change(app: ZLH, grant: Grant, actor_id: UUID, user_id: UUID, permissions: Iterable[str]) -> Written:
    wanted = list(permissions)
    for _ in range(10):
        membership = _load(app, grant, user_id)
        if not membership.change_permissions(wanted, actor_id):
            return Written(user_id, app.head())
        try:
            return Written(user_id, app.save(membership)[-1].notification.id)
        except IntegrityError:
            continue
    raise SubuserExistsError("this person's membership is changing right now; try again")


def remove(app: ZLH, grant: Grant, actor_id: UUID, user_id: UUID) -> Written:
    for _ in range(10):
        membership = _load(app, grant, user_id)
        membership.remove(actor_id)
        try:
            return Written(user_id, app.save(membership)[-1].notification.id)
        except IntegrityError:
            continue
    raise SubuserExistsError("this person's membership is changing right now; try again")


def _load(app: ZLH, grant: Grant, user_id: UUID) -> Subuser:
    membership = app.find(subuser_id(grant.instance_id, user_id), Subuser)
    if membership is None or not membership.active:
        raise SubuserNotFoundError("no such subuser")
    return membership
