"""The `User` and `Credential` aggregates.

A user's id derives from the email, so emails are unique by construction. A user can be
disabled and enabled by an operator; while disabled, none of their tokens authenticates.

A `Credential` is one API token, keyed by the SHA-256 hash of the token, so the token itself
is never stored anywhere. It names its user, a `name` the user chose, a `scope` (`full`, or
`read`: GET and HEAD only) and an optional expiry; once `Revoked` it never authenticates
again. Credentials issued before names and scopes existed (`Issued` version 1, and the user's
legacy `TokenIssued`) read as full-scope tokens without expiry.

The bootstrap admin (`ZLH_BOOTSTRAP_ADMIN_TOKEN`) is a user whose current bootstrap credential
is recorded on the user: setting a new one revokes the previous ones in the same save.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import credential_id, user_id_for_email
from domain.text import check_text, check_timestamp

#: What a token may do: `full` everything its user may; `read` only GET and HEAD.
SCOPES = ("full", "read")
#: The name legacy tokens (issued before tokens had names) are listed with.
LEGACY_TOKEN_NAME = "API token"
#: The furthest ahead a token's expiry may be set.
MAX_TOKEN_LIFETIME = timedelta(days=3660)
MAX_TOKEN_NAME = 100


class TokenRuleError(DomainError):
    """A token request breaks a rule (its name, scope or expiry)."""

    code = "validation_error"


class TokenRevokedError(DomainError):
    """A revoked token cannot be made valid again."""

    code = "token_revoked"


class CannotDisableSelfError(DomainError):
    """An operator cannot disable their own account (nobody could enable it again from it)."""

    code = "cannot_disable_self"


def check_token_name(name: str) -> str:
    """A token's name: 1-100 characters of free text (domain/text.py)."""
    if not 1 <= len(name) <= MAX_TOKEN_NAME:
        raise TokenRuleError(f"a token's name is 1 to {MAX_TOKEN_NAME} characters")
    check_text("name", name)
    return name


def check_token_expiry(expires_at: datetime | None, now: datetime) -> None:
    """An expiry must be a storable timestamp (domain/text.py) in the future, at most ten years ahead."""
    if expires_at is None:
        return
    check_timestamp("expires_at", expires_at)
    if expires_at <= now:
        raise TokenRuleError("expires_at is in the past")
    if expires_at - now > MAX_TOKEN_LIFETIME:
        raise TokenRuleError("expires_at is more than ten years ahead")


class User(Aggregate):
    TOPIC = "zlh.User"

    class Event(Aggregate.Event):
        TOPIC = "zlh.User.Event"

    class Registered(Event, Aggregate.Created):
        TOPIC = "zlh.User.Registered"
        email: str
        admin: bool

    class TokenIssued(Event):
        """Legacy: how tokens were recorded before `Credential.Issued` carried them alone."""

        TOPIC = "zlh.User.TokenIssued"
        token_hash: str

    class Disabled(Event):
        TOPIC = "zlh.User.Disabled"
        by: UUID

    class Enabled(Event):
        TOPIC = "zlh.User.Enabled"
        by: UUID

    class BootstrapTokenSet(Event):
        """`credential_id` is now the bootstrap token; `revoked` lists the earlier ones revoked with it."""

        TOPIC = "zlh.User.BootstrapTokenSet"
        credential_id: UUID
        revoked: list[UUID]

    @staticmethod
    def create_id(email: str) -> UUID:
        return user_id_for_email(email)

    @event(Registered)
    def __init__(self, email: str, admin: bool) -> None:
        self.email = email
        self.admin = admin
        self.token_hashes: list[str] = []
        self.disabled = False
        self.bootstrap_credential_id: UUID | None = None

    @property
    def bootstrap_credential_ids(self) -> list[UUID]:
        """The current bootstrap credential and, on the bootstrap admin, legacy tokens (all issued at bootstrap)."""
        current = [self.bootstrap_credential_id] if self.bootstrap_credential_id is not None else []
        return [credential_id(h) for h in self.token_hashes] + current

    def disable(self, by: UUID) -> bool:
        """Disable the account; False if it already is."""
        if by == self.id:
            raise CannotDisableSelfError("you cannot disable your own account; ask another operator")
        if self.disabled:
            return False
        self._disabled(by=by)
        return True

    def enable(self, by: UUID) -> bool:
        """Enable the account again; False if it is not disabled."""
        if not self.disabled:
            return False
        self._enabled(by=by)
        return True

    def set_bootstrap_token(self, credential: Credential, previous: list[Credential]) -> list[Credential]:
        """Make `credential` the bootstrap token, revoking every earlier bootstrap credential in `previous`;
        return the ones it revoked (to be saved with this user)."""
        if credential.user_id != self.id:
            raise TokenRuleError("the bootstrap token belongs to another user")
        revoked = [old for old in previous
                   if old.id != credential.id and old.user_id == self.id and old.revoke("bootstrap_rotated", self.id)]
        self._bootstrap_token_set(credential_id=credential.id, revoked=[old.id for old in revoked])
        return revoked

    @event(TokenIssued)
    def _token_issued(self, token_hash: str) -> None:
        self.token_hashes.append(token_hash)

    @event(Disabled)
    def _disabled(self, by: UUID) -> None:
        self.disabled = True

    @event(Enabled)
    def _enabled(self, by: UUID) -> None:
        self.disabled = False

    @event(BootstrapTokenSet)
    def _bootstrap_token_set(self, credential_id: UUID, revoked: list[UUID]) -> None:
        self.bootstrap_credential_id = credential_id


class Credential(Aggregate):
    TOPIC = "zlh.Credential"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Credential.Event"

    class Issued(Event, Aggregate.Created):
        TOPIC = "zlh.Credential.Issued"
        class_version = 2
        token_hash: str
        user_id: UUID
        name: str
        scope: str
        expires_at: datetime | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Tokens issued before names, scopes and expiry: full scope, never expiring."""
            state.update(name=LEGACY_TOKEN_NAME, scope="full", expires_at=None)

    class Revoked(Event):
        """`reason`: `owner` (its user revoked it) or `bootstrap_rotated` (a new bootstrap token replaced it)."""

        TOPIC = "zlh.Credential.Revoked"
        reason: str
        by: UUID

    @staticmethod
    def create_id(token_hash: str) -> UUID:
        return credential_id(token_hash)

    @classmethod
    def issue(cls, token_hash: str, user_id: UUID, name: str, scope: str, expires_at: datetime | None,
              now: datetime) -> Credential:
        """A new token for `user_id`, once its name, scope and expiry follow the rules."""
        if scope not in SCOPES:
            raise TokenRuleError(f"scope is one of {', '.join(SCOPES)}")
        check_token_expiry(expires_at, now)
        return cls(token_hash=token_hash, user_id=user_id, name=check_token_name(name), scope=scope,
                   expires_at=expires_at)

    @event(Issued)
    def __init__(self, token_hash: str, user_id: UUID, name: str, scope: str, expires_at: datetime | None) -> None:
        self.token_hash = token_hash
        self.user_id = user_id
        self.name = name
        self.scope = scope
        self.expires_at = expires_at
        self.revoked = False

    def is_valid(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def revoke(self, reason: str, by: UUID) -> bool:
        """Revoke the token for good; False if it already was."""
        if self.revoked:
            return False
        self._revoked(reason=reason, by=by)
        return True

    @event(Revoked)
    def _revoked(self, reason: str, by: UUID) -> None:
        self.revoked = True
