"""Use cases for users and API tokens: register, issue, list and revoke tokens, disable and enable users,
bootstrap the admin.

A token is shown once, when it is issued; only its SHA-256 is stored, as the id of its `Credential`.
Authenticating a request is services/access.py's job (from the tokens read model, cached).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.ids import credential_id, user_id_for_email
from domain.text import check_text
from domain.user import Credential, TokenRevokedError, TokenRuleError, User
from projections import tokens as tokens_view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.store import ZLH
from services.infrastructure.token_usage import last_used

BOOTSTRAP_ADMIN_EMAIL = "admin@zlh.localhost"
#: The names tokens get when ZLH makes them (users name the ones they create).
FIRST_TOKEN_NAME = "first token"
BOOTSTRAP_TOKEN_NAME = "ZLH_BOOTSTRAP_ADMIN_TOKEN"
GENERATED_ADMIN_TOKEN_NAME = "initial admin token"


class EmailTakenError(DomainError):
    code = "email_taken"


class UserNotFoundError(DomainError):
    code = "not_found"


class TokenNotFoundError(DomainError):
    code = "not_found"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, and the token they came with (`scope` `full` or `read`)."""

    id: UUID
    email: str
    admin: bool
    scope: str = "full"
    token_id: UUID | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "zlh_" + secrets.token_urlsafe(32)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Registered:
    """A new user, their first token (shown once) and the log position of the registration."""

    principal: Principal
    token: str
    position: int


def create_user(app: ZLH, email: str, admin: bool) -> Registered:
    """Register a user with a fresh full-scope token."""
    check_text("email", email)
    token = new_token()
    user = User(email=email.strip().lower(), admin=admin)
    credential = Credential.issue(hash_token(token), user.id, FIRST_TOKEN_NAME, "full", None, _now())
    try:
        recordings = app.save(user, credential)
    except IntegrityError:
        raise EmailTakenError(f"a user with email {email!r} already exists") from None
    return Registered(Principal(user.id, user.email, user.admin), token, recordings[-1].notification.id)


def load_user(app: ZLH, user_id: UUID) -> User:
    user = app.find(user_id, User)
    if user is None:
        raise UserNotFoundError("no such user")
    return user


# Tokens.

@dataclass(frozen=True)
class IssuedToken:
    """A token just issued: shown once, never again."""

    id: UUID
    name: str
    scope: str
    expires_at: datetime | None
    token: str
    position: int


def issue_token(app: ZLH, user_id: UUID, name: str, scope: str, expires_at: datetime | None,
                now: datetime | None = None) -> IssuedToken:
    """A new token for `user_id` with a name, a scope and an optional expiry (in the future)."""
    token = new_token()
    credential = Credential.issue(hash_token(token), user_id, name, scope, expires_at, now or _now())
    position = app.save(credential)[-1].notification.id
    return IssuedToken(credential.id, credential.name, credential.scope, credential.expires_at, token, position)


def revoke_token(app: ZLH, user_id: UUID, token_id: UUID) -> int:
    """Revoke one of `user_id`'s tokens for good; another user's (or no) token is `not_found`."""
    for _ in range(10):
        credential = app.find(token_id, Credential)
        if credential is None or credential.user_id != user_id or credential.revoked:
            raise TokenNotFoundError("no such token")
        credential.revoke("owner", user_id)
        try:
            return app.save(credential)[-1].notification.id
        except IntegrityError:
            continue  # revoked concurrently: look again
    raise RuntimeError("revoke_token: too much contention")


def list_tokens(db: ReadModelDB, user_id: UUID) -> list[dict[str, Any]]:
    """A user's tokens that are not revoked (never the token itself), with when each was last used."""
    rows = tokens_view.list_for_user(db, str(user_id))
    used = last_used(db, [r["id"] for r in rows])
    return [{**r, "last_used_at": used.get(r["id"])} for r in rows]


# Operators disable and enable users.

def set_disabled(app: ZLH, operator_id: UUID, user_id: UUID, disabled: bool) -> tuple[User, int]:
    """Disable (every token of theirs answers 401) or enable a user; nothing else of theirs changes."""
    for _ in range(10):
        user = load_user(app, user_id)
        changed = user.disable(operator_id) if disabled else user.enable(operator_id)
        if not changed:
            return user, app.head()
        try:
            return user, app.save(user)[-1].notification.id
        except IntegrityError:
            continue
    raise RuntimeError("set_disabled: too much contention")


# The bootstrap admin.

@dataclass(frozen=True)
class Bootstrapped:
    principal: Principal
    revoked: list[UUID]  # earlier bootstrap tokens revoked now
    position: int


def ensure_bootstrap_admin(app: ZLH, token: str) -> Bootstrapped:
    """Make `token` the bootstrap admin's token and revoke the previous one (idempotent; safe to run at every
    start, from several processes at once: the admin's stream decides)."""
    token_hash = hash_token(token)
    wanted = credential_id(token_hash)
    for _ in range(20):
        user = app.find(user_id_for_email(BOOTSTRAP_ADMIN_EMAIL), User) or User(email=BOOTSTRAP_ADMIN_EMAIL,
                                                                                  admin=True)
        credential = _bootstrap_credential(app, user, token_hash)
        principal = Principal(user.id, user.email, user.admin, "full", credential.id)
        if user.bootstrap_credential_id == wanted:
            return Bootstrapped(principal, [], app.head())
        previous = [c for c in (app.find(i, Credential) for i in user.bootstrap_credential_ids if i != wanted)
                    if c is not None]
        revoked = user.set_bootstrap_token(credential, previous)
        try:
            recordings = app.save(user, credential, *revoked)
        except IntegrityError:
            continue  # another process bootstrapped at the same time: look again
        return Bootstrapped(principal, [c.id for c in revoked], recordings[-1].notification.id)
    raise RuntimeError("could not bootstrap the admin user")


def ensure_admin_token(app: ZLH, token: str) -> Credential:
    """A generated admin token (`var/initial-admin-token`): issued to the bootstrap admin if it is not yet.

    Unlike `ensure_bootstrap_admin` it revokes nothing. Returns the credential, which may be revoked.
    """
    for _ in range(20):
        user = app.find(user_id_for_email(BOOTSTRAP_ADMIN_EMAIL), User) or User(email=BOOTSTRAP_ADMIN_EMAIL,
                                                                                  admin=True)
        credential = app.find(credential_id(hash_token(token)), Credential)
        if credential is not None:
            if credential.user_id != user.id:
                raise TokenRuleError("this token belongs to another user")
            return credential
        credential = Credential.issue(hash_token(token), user.id, GENERATED_ADMIN_TOKEN_NAME, "full", None, _now())
        try:
            app.save(user, credential)
        except IntegrityError:
            continue
        return credential
    raise RuntimeError("could not issue the admin token")


def _bootstrap_credential(app: ZLH, user: User, token_hash: str) -> Credential:
    credential = app.find(credential_id(token_hash), Credential)
    if credential is None:
        return Credential.issue(token_hash, user.id, BOOTSTRAP_TOKEN_NAME, "full", None, _now())
    if credential.user_id != user.id:
        raise TokenRuleError("ZLH_BOOTSTRAP_ADMIN_TOKEN is another user's token; choose another value")
    if credential.revoked:
        raise TokenRevokedError("this ZLH_BOOTSTRAP_ADMIN_TOKEN was revoked; a revoked token never works again: "
                                "choose a new value")
    return credential
