"""`AnnouncementsProjection`: what each user sees now (global plus addressed to them, in their window)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.announcement import Announcement
from projections.base import After, Cursor, Database, Projection, Table, iso, newest_first

TABLE = "rm_announcements"


class AnnouncementsProjection(Projection):
    name = "announcements"
    tables = (
        Table(
            TABLE,
            "id TEXT PRIMARY KEY, level TEXT NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, user_id TEXT, "
            "starts_at TEXT, ends_at TEXT, source TEXT NOT NULL, withdrawn INTEGER NOT NULL, "
            "created_at TEXT NOT NULL",
            indexes=(("user", "user_id"),),
        ),
    )
    topics = frozenset({Announcement.Published.TOPIC, Announcement.Withdrawn.TOPIC})

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, aid = t[TABLE], str(event.originator_id)
        if isinstance(event, Announcement.Published):
            cur.execute(
                f"INSERT INTO {table} (id, level, title, body, user_id, starts_at, ends_at, source, withdrawn, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s)",
                (aid, event.level, event.title, event.body, str(event.user_id) if event.user_id else None,
                 iso(event.starts_at) if event.starts_at else None, iso(event.ends_at) if event.ends_at else None,
                 event.source, iso(event.timestamp)),
            )
        elif isinstance(event, Announcement.Withdrawn):
            cur.execute(f"UPDATE {table} SET withdrawn = 1 WHERE id = %s", (aid,))


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("id", "level", "title", "body", "user_id", "starts_at", "ends_at", "source",
                              "created_at")} | {"withdrawn": bool(r["withdrawn"])}


def current_for(db: Database, user_id: str, now: datetime, limit: int = 10_000, after: After = None
                ) -> list[dict[str, Any]]:
    """Not withdrawn, inside its window, and global or addressed to `user_id`; newest first."""
    at = iso(now)
    where = ("withdrawn = 0 AND (user_id IS NULL OR user_id = %s) AND (starts_at IS NULL OR starts_at <= %s) "
             "AND (ends_at IS NULL OR ends_at > %s)")
    return [_row(r) for r in newest_first(db, TABLE, where, [user_id, at, at], limit, after)]


def list_all(db: Database, limit: int = 10_000, after: After = None) -> list[dict[str, Any]]:
    return [_row(r) for r in newest_first(db, TABLE, "", [], limit, after)]
