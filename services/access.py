"""Use cases for access: who a bearer token belongs to (fast), and the rate limits around it.

Authentication reads the `tokens` read model by primary key (a token's id derives from its
hash) and keeps what it read for at most `ttl` seconds (2 s by default) in this process. A
token the read model does not have yet (issued a moment ago) is looked up in the store, so a
new token works for the very next request. Expiry is checked at every request; revocations and
disables clear the cache at once in the process that made them, and in every API process when
its `TokenInvalidator` sees them in the log, and again once the read model has them.

Rate limits: each token may make `per_token` requests a minute; each client address may fail
`failures_per_address` authentications a minute, after which every authentication from it is
refused (429) until the window resets, before the token is even looked at: valid and invalid
tokens get the same answer, so guessing learns nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.ids import credential_id
from domain.user import Credential, User
from projections import tokens as tokens_view
from projections.base import Database, parse_iso
from services.infrastructure.log_following import Wakeup, follow_log
from services.infrastructure.rate_limits import Window, Windows
from services.infrastructure.store import ZLH
from services.infrastructure.token_usage import UsageRecorder
from services.users import Principal, hash_token

log = logging.getLogger(__name__)


def token_id(token: str) -> UUID:
    """The id of the credential a bearer token would be (its hash's uuid5)."""
    return credential_id(hash_token(token))


@dataclass(frozen=True)
class TokenRecord:
    """What authentication knows about one token and its user."""

    id: UUID
    user_id: UUID
    email: str
    admin: bool
    scope: str
    expires_at: datetime | None
    revoked: bool
    disabled: bool

    def principal(self, now: datetime) -> Principal | None:
        """The caller this token makes, or None if it is revoked, expired or its user disabled."""
        if self.revoked or self.disabled or (self.expires_at is not None and now >= self.expires_at):
            return None
        return Principal(self.user_id, self.email, self.admin, self.scope, self.id)


class Authenticator:
    """Tokens from the read model, with a short in-process cache and the store for tokens not projected yet."""

    def __init__(self, app: ZLH, db: Database, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app, self.db, self.ttl = app, db, ttl
        self.clock, self.wall = clock, wall
        self._cache: dict[UUID, tuple[float, TokenRecord]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal | None:
        """The caller a bearer token makes, or None."""
        if not token:
            return None
        record = self.record(token_id(token))
        return record.principal(self.wall()) if record is not None else None

    def cached(self, tid: UUID) -> TokenRecord | None:
        """The record if this process read it less than `ttl` ago (no I/O), else None."""
        hit = self._cache.get(tid)
        if hit is None or hit[0] <= self.clock():
            return None
        return hit[1]

    def record(self, tid: UUID) -> TokenRecord | None:
        return self.cached(tid) or self.load(tid)

    def load(self, tid: UUID) -> TokenRecord | None:
        """Read a token from the read model (cached), or from the store if the read model does not have it yet."""
        generation = self._generation
        row = tokens_view.lookup(self.db, str(tid))
        if row is None:
            return self._from_store(tid)
        record = TokenRecord(
            id=tid, user_id=UUID(row["user_id"]), email=row["email"], admin=bool(row["admin"]), scope=row["scope"],
            expires_at=parse_iso(row["expires_at"]) if row["expires_at"] else None,
            revoked=row["revoked_at"] is not None, disabled=bool(row["disabled"]))
        with self._lock:
            if generation == self._generation and self.ttl > 0:  # no invalidation since we read: keep it
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[tid] = (self.clock() + self.ttl, record)
        return record

    def invalidate(self) -> None:
        """Forget everything read so far (a token was revoked or a user disabled or enabled)."""
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def _from_store(self, tid: UUID) -> TokenRecord | None:
        credential = self.app.find(tid, Credential)
        user = self.app.find(credential.user_id, User) if credential is not None else None
        if credential is None or user is None:
            return None
        return TokenRecord(credential.id, user.id, user.email, user.admin, credential.scope, credential.expires_at,
                           credential.revoked, user.disabled)


@dataclass(frozen=True)
class Decision:
    """What access control decided about one request that came with a bearer token."""

    principal: Principal | None  # None: the token is not valid (401)
    window: Window  # the rate-limit window the answer reports in its RateLimit-* headers
    refused: bool = False  # over a rate limit (429)


class AccessGate:
    """Authentication and both rate limits, in the order that keeps guessing useless and valid callers cheap."""

    def __init__(self, authenticator: Authenticator, windows: Windows, usage: UsageRecorder,
                 per_token: int, failures_per_address: int) -> None:
        self.authenticator, self.windows, self.usage = authenticator, windows, usage
        self.per_token, self.failures_per_address = per_token, failures_per_address

    def needs_io(self, tid: UUID) -> bool:
        """Whether `check` would wait for a database or Redis (then it belongs on a worker thread)."""
        return not self.windows.local or self.authenticator.cached(tid) is None

    def check(self, tid: UUID, address: str) -> Decision:
        failures_key = f"auth-failures:{address}"
        failures = self.windows.peek(failures_key, self.failures_per_address)
        if failures.count >= self.failures_per_address:
            return Decision(None, failures, refused=True)
        record = self.authenticator.record(tid)
        principal = record.principal(self.authenticator.wall()) if record is not None else None
        if principal is None:
            return Decision(None, self.windows.hit(failures_key, self.failures_per_address))
        window = self.windows.hit(f"token:{tid}", self.per_token)
        if window.count > self.per_token:
            return Decision(principal, window, refused=True)
        self.usage.touch(tid)
        return Decision(principal, window)


class TokenInvalidator:
    """Follows the log for revocations, disables and enables made by any process, and clears this process's
    cache twice: when the event is in the log, and again once the `tokens` read model has applied it (so
    nothing read from the read model in between outlives the change)."""

    TOPICS = (Credential.Revoked.TOPIC, User.Disabled.TOPIC, User.Enabled.TOPIC)
    PAGE = 200

    def __init__(self, app: ZLH, authenticator: Authenticator, wait_for_view: Callable[[int], Any]) -> None:
        self.app, self.authenticator, self.wait_for_view = app, authenticator, wait_for_view
        self.position = app.head()  # what came before this process started is in no cache

    def drain_page(self) -> int:
        head = self.app.head()
        if head <= self.position:
            return 0
        page = self.app.recorder.select_notifications(start=self.position, limit=self.PAGE, stop=head,
                                                      topics=self.TOPICS, inclusive_of_start=False)
        if page:
            self.authenticator.invalidate()
            self.wait_for_view(page[-1].id)
            self.authenticator.invalidate()
        self.position = page[-1].id if len(page) == self.PAGE else head
        return len(page)

    def run(self, stop: threading.Event, wakeup: Wakeup) -> None:
        follow_log("token invalidation", stop, self.drain_page, wakeup)
