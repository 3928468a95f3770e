"""Use cases for users and API tokens: register, bootstrap the admin, authenticate."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.ids import credential_id, derive
from domain.text import check_text
from domain.user import Credential, User
from services.infrastructure.store import ZLH


class EmailTakenError(DomainError):
    code = "email_taken"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    id: UUID
    email: str
    admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "zlh_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Registered:
    """A new user, their first token (shown once) and the log position of the registration."""

    principal: Principal
    token: str
    position: int


def create_user(app: ZLH, email: str, admin: bool) -> Registered:
    """Register a user with a fresh token."""
    check_text("email", email)
    token = new_token()
    user = User(email=email.strip().lower(), admin=admin)
    credential = user.issue_token(hash_token(token))
    try:
        recordings = app.save(user, credential)
    except IntegrityError:
        raise EmailTakenError(f"a user with email {email!r} already exists") from None
    return Registered(Principal(user.id, user.email, user.admin), token, recordings[-1].notification.id)


BOOTSTRAP_ADMIN_EMAIL = "admin@zlh.localhost"


def ensure_bootstrap_admin(app: ZLH, token: str) -> Principal:
    """Make `token` an admin token, idempotently (safe to run at every start, concurrently)."""
    token_hash = hash_token(token)
    user_id = derive("user", BOOTSTRAP_ADMIN_EMAIL)
    for _ in range(5):
        user = app.find(user_id, User) or User(email=BOOTSTRAP_ADMIN_EMAIL, admin=True)
        if token_hash in user.token_hashes:
            return Principal(user.id, user.email, user.admin)
        try:
            app.save(user, user.issue_token(token_hash))
            return Principal(user.id, user.email, user.admin)
        except IntegrityError:
            continue  # another process bootstrapped at the same time: look again
    raise RuntimeError("could not bootstrap the admin user")


def authenticate(app: ZLH, token: str) -> Principal | None:
    """The user a bearer token belongs to, or None."""
    if not token:
        return None
    credential = app.find(credential_id(hash_token(token)), Credential)
    user = app.find(credential.user_id, User) if credential is not None else None
    return Principal(user.id, user.email, user.admin) if user is not None else None
