"""`TicketsProjection`: support tickets for their owners and for the staff desk; `InboundMailProjection`:
mail received for support, the unmatched kept for staff.

The desk searches by number, customer email and subject (case-insensitive substring), filters by
status and assignee, and pages newest first by (created_at, id).
"""

from __future__ import annotations

from typing import Any

from domain.mail import InboundMail
from domain.support import SupportTicket
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

TABLE = "rm_tickets"
MAIL = "rm_inbound_mail"

_COLUMNS = ("id", "number", "owner_id", "email", "subject", "instance_id", "status", "replies", "notes",
            "assignee_id", "last_from", "helpdesk_id", "created_at", "updated_at")


class TicketsProjection(Projection):
    name = "tickets"
    version = 2
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE, owner_id TEXT NOT NULL, email TEXT NOT NULL, "
            "subject TEXT NOT NULL, instance_id TEXT, status TEXT NOT NULL, replies INTEGER NOT NULL, "
            "notes INTEGER NOT NULL, assignee_id TEXT, last_from TEXT NOT NULL, helpdesk_id TEXT, "
            "created_at TEXT NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("owner_created", "owner_id, created_at"), ("status_created", "status, created_at"),
                     ("assignee", "assignee_id")),
        ),
    )
    topics = frozenset({SupportTicket.Opened.TOPIC, SupportTicket.Replied.TOPIC, SupportTicket.NoteAdded.TOPIC,
                        SupportTicket.Assigned.TOPIC, SupportTicket.Closed.TOPIC, SupportTicket.Reopened.TOPIC,
                        SupportTicket.HelpdeskLinked.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, tid = t[TABLE], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, SupportTicket.Opened):
            cur.execute(
                f"INSERT INTO {table} (id, number, owner_id, email, subject, instance_id, status, replies, notes, "
                "last_from, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, 'open', 0, 0, 'customer', %s, %s)",
                (tid, event.number, str(event.owner_id), event.email, event.subject,
                 str(event.instance_id) if event.instance_id else None, at, at),
            )
            return
        if isinstance(event, SupportTicket.Replied):
            sets, params = "replies = replies + 1, status = %s, last_from = %s", (
                "waiting_on_customer" if event.staff else "open", "staff" if event.staff else "customer")
        elif isinstance(event, SupportTicket.NoteAdded):
            sets, params = "notes = notes + 1", ()
        elif isinstance(event, SupportTicket.Assigned):
            sets, params = "assignee_id = %s", (str(event.assignee_id) if event.assignee_id else None,)
        elif isinstance(event, SupportTicket.Closed):
            sets, params = "status = 'closed'", ()
        elif isinstance(event, SupportTicket.Reopened):
            sets, params = "status = 'open'", ()
        elif isinstance(event, SupportTicket.HelpdeskLinked):
            sets, params = "helpdesk_id = %s", (f"{event.system}:{event.remote_id}",)
        else:
            return
        cur.execute(f"UPDATE {table} SET {sets}, updated_at = %s WHERE id = %s", (*params, at, tid))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    row = {k: r[k] for k in _COLUMNS}
    row["replies"], row["notes"] = int(row["replies"]), int(row["notes"])
    return row


def list_for_owner(db: Database, owner_id: str, limit: int = 10_000, after: After = None) -> list[dict[str, Any]]:
    """A customer's tickets, newest first (a page: `after` the previous page's last (created_at, id))."""
    return [_row(r) for r in newest_first(db, TABLE, "owner_id = %s", [owner_id], limit, after)]


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search(db: Database, status: str | None = None, q: str | None = None, assignee: str | None = None,
           limit: int = 100, after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """The desk's list: by status, by a search over number, email and subject, by assignee (`none`: nobody)."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("status = %s")
        params.append(status)
    if q and q.strip():
        like = _like(q.strip())
        where.append("(LOWER(number) LIKE %s ESCAPE '\\' OR LOWER(email) LIKE %s ESCAPE '\\' "
                     "OR LOWER(subject) LIKE %s ESCAPE '\\')")
        params += [like, like, like]
    if assignee == "none":
        where.append("assignee_id IS NULL")
    elif assignee:
        where.append("assignee_id = %s")
        params.append(assignee)
    if after is not None:
        where.append("(created_at < %s OR (created_at = %s AND id > %s))")
        params += [after[0], after[0], after[1]]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = db.query(f"SELECT * FROM {TABLE} {clause} ORDER BY created_at DESC, id LIMIT %s", (*params, limit))
    return [_row(r) for r in rows]


def list_all(db: Database, status: str | None = None) -> list[dict[str, Any]]:
    return search(db, status=status, limit=100_000)


def counts(db: Database) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in db.query(f"SELECT status, COUNT(*) AS n FROM {TABLE} GROUP BY status")}


class InboundMailProjection(Projection):
    name = "inbound_mail"
    tables = (
        Table(
            MAIL,
            "id TEXT PRIMARY KEY, message_id TEXT NOT NULL, channel TEXT NOT NULL, from_address TEXT NOT NULL, "
            "recipients TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, ticket_id TEXT, "
            "ticket_number TEXT, attachments INTEGER NOT NULL, refused INTEGER NOT NULL, raw_size BIGINT NOT NULL, "
            "received_at TEXT NOT NULL, updated_at TEXT NOT NULL",
            indexes=(("status_received", "status, received_at"),),
        ),
    )
    topics = frozenset({InboundMail.Received.TOPIC, InboundMail.Dismissed.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, mid = t[MAIL], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, InboundMail.Received):
            cur.execute(
                f"INSERT INTO {table} (id, message_id, channel, from_address, recipients, subject, status, reason, "
                "ticket_id, ticket_number, attachments, refused, raw_size, received_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (mid, event.message_id, event.channel, event.from_address, ", ".join(event.recipients),
                 event.subject, event.outcome, event.reason, str(event.ticket_id) if event.ticket_id else None,
                 event.ticket_number, len(event.attachments), len(event.refused), event.raw_size, at, at),
            )
        elif isinstance(event, InboundMail.Dismissed):
            cur.execute(f"UPDATE {table} SET status = 'dismissed', updated_at = %s WHERE id = %s", (at, mid))


def _mail_row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("id", "message_id", "channel", "from_address", "recipients", "subject", "status",
                              "reason", "ticket_id", "ticket_number", "received_at")} | {
        "attachments": int(r["attachments"]), "refused": int(r["refused"]), "raw_size": int(r["raw_size"])}


def list_mail(db: Database, status: str | None = "unmatched", limit: int = 100,
              after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Received mail, newest first (by default the unmatched: what staff must look at)."""
    where: list[str] = []
    params: list[Any] = []
    if status:
        where.append("status = %s")
        params.append(status)
    if after is not None:
        where.append("(received_at < %s OR (received_at = %s AND id > %s))")
        params += [after[0], after[0], after[1]]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = db.query(f"SELECT * FROM {MAIL} {clause} ORDER BY received_at DESC, id LIMIT %s", (*params, limit))
    return [_mail_row(r) for r in rows]


def get_mail(db: Database, mail_id: str) -> dict[str, Any] | None:
    rows = db.query(f"SELECT * FROM {MAIL} WHERE id = %s", (mail_id,))
    return _mail_row(rows[0]) if rows else None
