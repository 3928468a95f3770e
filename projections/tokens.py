"""`TokensProjection`: what authentication needs to know about each API token, and the users' token lists.

One row per token (its id derives from the token's hash, so a bearer token is looked up by
primary key; neither the token nor its hash is kept here) with its user, name, scope, expiry
and revocation, and one row per user with what a request needs of them (email, operator flag,
disabled). Legacy tokens (`User.TokenIssued`, `Credential.Issued` version 1) are full-scope
tokens that never expire.
"""

from __future__ import annotations

from typing import Any

from domain.ids import credential_id
from domain.user import LEGACY_TOKEN_NAME, Credential, User
from projections.base import Cursor, Database, Projection, Table, iso

TOKENS = "rm_tokens"
USERS = "rm_token_users"


class TokensProjection(Projection):
    name = "tokens"
    tables = (
        Table(TOKENS, "id TEXT PRIMARY KEY, user_id TEXT NOT NULL, name TEXT NOT NULL, scope TEXT NOT NULL, "
                      "created_at TEXT NOT NULL, expires_at TEXT, revoked_at TEXT",
              indexes=(("user_created", "user_id, created_at"),)),
        Table(USERS, "id TEXT PRIMARY KEY, email TEXT NOT NULL, admin INTEGER NOT NULL, disabled INTEGER NOT NULL"),
    )
    topics = frozenset({User.Registered.TOPIC, User.TokenIssued.TOPIC, User.Disabled.TOPIC, User.Enabled.TOPIC,
                        Credential.Issued.TOPIC, Credential.Revoked.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        tokens, users, at = t[TOKENS], t[USERS], iso(event.timestamp)
        if isinstance(event, User.Registered):
            cur.execute(f"INSERT INTO {users} (id, email, admin, disabled) VALUES (%s, %s, %s, 0) "
                        "ON CONFLICT (id) DO NOTHING", (str(event.originator_id), event.email, int(bool(event.admin))))
        elif isinstance(event, User.Disabled | User.Enabled):
            cur.execute(f"UPDATE {users} SET disabled = %s WHERE id = %s",
                        (int(isinstance(event, User.Disabled)), str(event.originator_id)))
        elif isinstance(event, User.TokenIssued):
            cur.execute(f"INSERT INTO {tokens} (id, user_id, name, scope, created_at) VALUES (%s, %s, %s, 'full', %s) "
                        "ON CONFLICT (id) DO NOTHING",
                        (str(credential_id(event.token_hash)), str(event.originator_id), LEGACY_TOKEN_NAME, at))
        elif isinstance(event, Credential.Issued):
            expires = iso(event.expires_at) if event.expires_at is not None else None
            cur.execute(f"INSERT INTO {tokens} (id, user_id, name, scope, created_at, expires_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                        "scope = excluded.scope, expires_at = excluded.expires_at",
                        (str(event.originator_id), str(event.user_id), event.name, event.scope, at, expires))
        elif isinstance(event, Credential.Revoked):
            cur.execute(f"UPDATE {tokens} SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                        (at, str(event.originator_id)))


def lookup(db: Database, token_id: str) -> dict[str, Any] | None:
    """One token with its user, as authentication needs it; None if the read model does not have it."""
    rows = db.query(
        f"SELECT t.id, t.user_id, t.scope, t.expires_at, t.revoked_at, u.email, u.admin, u.disabled "
        f"FROM {TOKENS} t JOIN {USERS} u ON u.id = t.user_id WHERE t.id = %s", (token_id,))
    return rows[0] if rows else None


def list_for_user(db: Database, user_id: str) -> list[dict[str, Any]]:
    """A user's tokens that are not revoked, newest first."""
    rows = db.query(f"SELECT id, name, scope, created_at, expires_at FROM {TOKENS} "
                    "WHERE user_id = %s AND revoked_at IS NULL ORDER BY created_at DESC, id", (user_id,))
    return [dict(r) for r in rows]
