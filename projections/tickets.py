"""`TicketsProjection`: support tickets for their owners and for staff."""

from __future__ import annotations

from typing import Any

from domain.support import SupportTicket
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

TABLE = "rm_tickets"


class TicketsProjection(Projection):
    name = "tickets"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, owner_id TEXT NOT NULL, email TEXT NOT NULL, "
            "subject TEXT NOT NULL, instance_id TEXT, status TEXT NOT NULL, replies INTEGER NOT NULL, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("owner_created", "owner_id, created_at"), ("status_created", "status, created_at")),
        ),
    )
    topics = frozenset({SupportTicket.Opened.TOPIC, SupportTicket.Replied.TOPIC, SupportTicket.Closed.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, tid = t[TABLE], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, SupportTicket.Opened):
            cur.execute(
                f"INSERT INTO {table} (id, number, owner_id, email, subject, instance_id, status, replies, "
                "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'open', 0, %s, %s)",
                (tid, event.number, str(event.owner_id), event.email, event.subject,
                 str(event.instance_id) if event.instance_id else None, at, at),
            )
        elif isinstance(event, SupportTicket.Replied):
            cur.execute(f"UPDATE {table} SET replies = replies + 1, updated_at = %s WHERE id = %s", (at, tid))
        elif isinstance(event, SupportTicket.Closed):
            cur.execute(f"UPDATE {table} SET status = 'closed', updated_at = %s WHERE id = %s", (at, tid))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("id", "number", "owner_id", "email", "subject", "instance_id", "status", "replies",
                              "created_at", "updated_at")}


def list_for_owner(db: Database, owner_id: str, limit: int = 10_000, after: After = None) -> list[dict[str, Any]]:
    """A customer's tickets, newest first (a page: `after` the previous page's last (created_at, id))."""
    return [_row(r) for r in newest_first(db, TABLE, "owner_id = %s", [owner_id], limit, after)]


def list_all(db: Database, status: str | None = None, limit: int = 10_000, after: After = None
             ) -> list[dict[str, Any]]:
    """Every ticket (of one status), newest first, a page at a time."""
    where, params = ("status = %s", [status]) if status else ("", [])
    return [_row(r) for r in newest_first(db, TABLE, where, params, limit, after)]
