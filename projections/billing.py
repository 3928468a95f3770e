"""`BillingProjection` (`id` is the account id): each billing account's recorded state, since when, and its next step.

Reads the `BillingAccount` stream only. `next_step_at` is carried by the events (the
account computes it from its facts and the schedule), so a rebuild from position 0
gives the same rows; the billing worker's durable timer reads it here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.billing import TRANSITIONS, BillingAccount
from projections.base import Cursor, Database, Projection, Table, iso

TABLE = "rm_billing"


def _iso(ts: datetime | None) -> str | None:
    return iso(ts) if ts is not None else None


class BillingProjection(Projection):
    name = "billing"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, user_id TEXT NOT NULL, customer_id TEXT, state TEXT NOT NULL, "
            "since TEXT, next_step_at TEXT, anchor TEXT, subscription_status TEXT, "
            "rejected_actions INTEGER NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("user", "user_id"), ("next_step", "next_step_at")),
        ),
    )
    topics = frozenset({
        BillingAccount.Opened.TOPIC, BillingAccount.CustomerLinked.TOPIC, BillingAccount.InvoiceFactRecorded.TOPIC,
        BillingAccount.SubscriptionStatusRecorded.TOPIC, BillingAccount.DestructiveActionRejected.TOPIC,
        *(c.TOPIC for c in TRANSITIONS),
    })

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, aid, at = t[TABLE], str(event.originator_id), iso(event.timestamp)
        if isinstance(event, BillingAccount.Opened):
            cur.execute(f"INSERT INTO {table} (id, user_id, state, rejected_actions, updated_at) "
                        "VALUES (%s, %s, 'good_standing', 0, %s)", (aid, str(event.user_id), at))
        elif isinstance(event, BillingAccount.CustomerLinked):
            self._set(cur, table, aid, at, "customer_id = %s, next_step_at = %s",
                      (event.customer_id, _iso(event.next_step_at)))
        elif isinstance(event, BillingAccount.InvoiceFactRecorded):
            self._set(cur, table, aid, at, "anchor = %s, next_step_at = %s",
                      (_iso(event.anchor), _iso(event.next_step_at)))
        elif isinstance(event, BillingAccount.SubscriptionStatusRecorded):
            self._set(cur, table, aid, at, "subscription_status = %s", (event.status,))
        elif isinstance(event, BillingAccount.DestructiveActionRejected):
            self._set(cur, table, aid, at, "rejected_actions = rejected_actions + 1", ())
        elif isinstance(event, BillingAccount.Transitioned):
            self._set(cur, table, aid, at, "state = %s, since = %s, next_step_at = %s",
                      (event.state, _iso(event.since), _iso(event.next_step_at)))

    @staticmethod
    def _set(cur: Cursor, table: str, aid: str, at: str, assignments: str, params: tuple) -> None:
        cur.execute(f"UPDATE {table} SET {assignments}, updated_at = %s WHERE id = %s", (*params, at, aid))


def get_for_user(db: Database, user_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {TABLE} WHERE user_id = %s", (user_id,))
    return dict(rows[0]) if rows else None


def due(db: Database, now: datetime) -> list[dict[str, Any]]:
    """Accounts whose next step is due, or whose facts cleared while the state is not yet restored."""
    return [dict(r) for r in db.query(
        f"SELECT id AS account_id, user_id, state, next_step_at FROM {TABLE} WHERE (next_step_at IS NOT NULL "
        "AND next_step_at <= %s) OR (anchor IS NULL AND state <> 'good_standing') ORDER BY next_step_at",
        (iso(now),))]


def suspended_users(db: Database) -> list[str]:
    return [r["user_id"] for r in db.query(f"SELECT user_id FROM {TABLE} WHERE state = 'suspended'")]


def counts(db: Database) -> dict[str, int]:
    return {r["state"]: int(r["n"]) for r in db.query(f"SELECT state, COUNT(*) AS n FROM {TABLE} GROUP BY state")}


def list_all(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in db.query(f"SELECT * FROM {TABLE} ORDER BY id")]
