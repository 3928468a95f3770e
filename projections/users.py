"""`UsersProjection`: every user (email, operator flag, when registered), for the operators' list.

Token hashes are not copied here: the read model holds nothing that authenticates.
"""

from __future__ import annotations

from typing import Any

from domain.user import User
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first
from projections.tokens import USERS as TOKEN_USERS

TABLE = "rm_users"


class UsersProjection(Projection):
    name = "users"
    tables = (Table(TABLE, "id TEXT PRIMARY KEY, email TEXT NOT NULL, admin INTEGER NOT NULL, "
                           "created_at TEXT NOT NULL", indexes=(("created", "created_at"),)),)
    topics = frozenset({User.Registered.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        if isinstance(event, User.Registered):
            cur.execute(f"INSERT INTO {t[TABLE]} (id, email, admin, created_at) VALUES (%s, %s, %s, %s)",
                        (str(event.originator_id), event.email, int(bool(event.admin)), iso(event.timestamp)))


def list_users(db: Database, limit: int = 1000, after: After = None) -> list[dict[str, Any]]:
    """Newest first, with each user's billing state and Stripe customer when the billing read model has them,
    and whether they are disabled (from the tokens read model); a page at a time."""
    rows = newest_first(
        db, f"{TABLE} u LEFT JOIN rm_billing b ON b.user_id = u.id LEFT JOIN {TOKEN_USERS} d ON d.id = u.id", "",
        [], limit, after, columns="u.id, u.email, u.admin, u.created_at, b.state AS billing_state, b.customer_id, "
        "d.disabled", prefix="u.")
    return [{"id": r["id"], "email": r["email"], "admin": bool(r["admin"]), "created_at": r["created_at"],
             "billing_state": r["billing_state"] or "good_standing", "stripe_customer_id": r["customer_id"],
             "disabled": bool(r["disabled"])}
            for r in rows]
