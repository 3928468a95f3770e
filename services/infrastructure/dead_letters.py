"""Dead letters: events a follower could not handle, recorded and skipped so the follower goes on.

One row per (follower, log position) in `zlh_dead_letters`: the event's id (stream and version) and
type, the last error, how many attempts were made, the first and last attempt, and when it was
resolved (by a successful retry, or because a rebuild applied it). A read model's dead letters are
written in the same transaction as the position that skips them; a process manager's right before
its position moves past them.

Operators see them in `GET /api/admin/projections` and `GET /api/admin/queues` (`dead_letters`), on
the operators page, and in the `zlh_dead_letters` metric; `zlh projections retry NAME` applies them
again once the cause is fixed (ops/runbooks/dead-letters.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import Notification

from services.infrastructure.database import PortableCursor, ReadModelDB

TABLE = "zlh_dead_letters"
ERROR_LIMIT = 2000
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def create_dead_letters_table(cur: PortableCursor) -> None:
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        "follower TEXT NOT NULL, position BIGINT NOT NULL, originator_id TEXT NOT NULL, "
        "originator_version BIGINT NOT NULL, topic TEXT NOT NULL, error TEXT NOT NULL, attempts INTEGER NOT NULL, "
        "first_attempt_at TEXT NOT NULL, last_attempt_at TEXT NOT NULL, retry_requested_at TEXT, resolved_at TEXT, "
        "PRIMARY KEY (follower, position))"
    )


def describe(exc: BaseException) -> str:
    """An error as text any database column can hold: no control characters or surrogates, bounded."""
    text = f"{type(exc).__name__}: {exc}"
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)[:ERROR_LIMIT]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Attempts:
    """The failed attempts at one event, kept in memory until it is handled or becomes a dead letter."""

    count: int
    first_at: str
    last_at: str
    error: str


def record(cur: PortableCursor, follower: str, notification: Notification, attempts: Attempts) -> None:
    """Write (or refresh) the dead letter for `notification`; it stays unresolved until applied."""
    cur.execute(
        f"INSERT INTO {TABLE} (follower, position, originator_id, originator_version, topic, error, attempts, "
        "first_attempt_at, last_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (follower, position) DO UPDATE SET error = excluded.error, "
        f"attempts = {TABLE}.attempts + excluded.attempts, last_attempt_at = excluded.last_attempt_at, "
        "retry_requested_at = NULL, resolved_at = NULL",
        (follower, notification.id, str(notification.originator_id), notification.originator_version,
         notification.topic, attempts.error, attempts.count, attempts.first_at, attempts.last_at),
    )


def resolve(cur: PortableCursor, follower: str, position: int) -> None:
    cur.execute(f"UPDATE {TABLE} SET resolved_at = %s, retry_requested_at = NULL "
                "WHERE follower = %s AND position = %s AND resolved_at IS NULL", (_now(), follower, position))


def failed_again(cur: PortableCursor, follower: str, position: int, error: str) -> None:
    cur.execute(f"UPDATE {TABLE} SET error = %s, attempts = attempts + 1, last_attempt_at = %s, "
                "retry_requested_at = NULL WHERE follower = %s AND position = %s", (error, _now(), follower, position))


def request_retry(db: ReadModelDB, follower: str) -> int:
    """Ask the follower's running workers to apply its dead letters again; returns how many are asked."""
    with db.transaction() as cur:
        cur.execute(f"UPDATE {TABLE} SET retry_requested_at = %s WHERE follower = %s AND resolved_at IS NULL",
                    (_now(), follower))
        return cur.rowcount


def retry_requested(db: ReadModelDB, follower: str) -> list[int]:
    rows = db.query(f"SELECT position FROM {TABLE} WHERE follower = %s AND resolved_at IS NULL "
                    "AND retry_requested_at IS NOT NULL ORDER BY position", (follower,))
    return [int(r["position"]) for r in rows]


def replace_with_rebuilt(cur: PortableCursor, follower: str, rebuilt: str) -> None:
    """A rebuild swapped in: its dead letters (under `rebuilt`) replace the follower's unresolved ones."""
    cur.execute(f"UPDATE {TABLE} SET resolved_at = %s WHERE follower = %s AND resolved_at IS NULL",
                (_now(), follower))
    cur.execute(f"DELETE FROM {TABLE} WHERE follower = %s AND position IN "
                f"(SELECT position FROM {TABLE} WHERE follower = %s)", (follower, rebuilt))
    cur.execute(f"UPDATE {TABLE} SET follower = %s WHERE follower = %s", (follower, rebuilt))


def discard(cur: PortableCursor, follower: str) -> None:
    cur.execute(f"DELETE FROM {TABLE} WHERE follower = %s", (follower,))


def unresolved(db: ReadModelDB, follower: str | None = None) -> list[dict[str, Any]]:
    """Unresolved dead letters (of one follower, or all), oldest first."""
    where, params = ("AND follower = %s", (follower,)) if follower else ("", ())
    return db.query(
        f"SELECT follower, position, originator_id, originator_version, topic, error, attempts, first_attempt_at, "
        f"last_attempt_at, retry_requested_at FROM {TABLE} WHERE resolved_at IS NULL {where} "
        "ORDER BY follower, position", params)


def counts(db: ReadModelDB) -> dict[str, int]:
    """Unresolved dead letters per follower."""
    rows = db.query(f"SELECT follower, COUNT(*) AS n FROM {TABLE} WHERE resolved_at IS NULL GROUP BY follower")
    return {r["follower"]: int(r["n"]) for r in rows}
