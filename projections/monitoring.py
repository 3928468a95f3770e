"""`MonitoringTargetsProjection`: Prometheus `file_sd` targets for every running game and dev instance.

The table holds one row per instance; after each committed page (and after a rebuild) the
target file is rewritten from the table, atomically. A stopped or deleted instance's row stops
qualifying, so its target disappears by itself: a stale target cannot outlive the log.
Labels: instance id, kind, owner id (never an email or a name).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from domain.instance import Instance
from projections.base import Cursor, Database, Projection, Table, iso

TABLE = "rm_monitoring_targets"
TARGETS_FILE = "monitoring/targets/zlh-instances.json"


def target_of(address: str) -> str:
    """`host:port` from a game address or a dev IDE URL."""
    return address.removeprefix("http://").removeprefix("https://").rstrip("/")


class MonitoringTargetsProjection(Projection):
    name = "monitoring"
    tables = (
        Table(TABLE, "id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner_id TEXT NOT NULL, address TEXT, "
                     "status TEXT NOT NULL, updated_at TEXT NOT NULL"),
    )
    topics = frozenset({Instance.Requested.TOPIC, Instance.Provisioned.TOPIC, Instance.Started.TOPIC,
                        Instance.Stopped.TOPIC, Instance.OperationFailed.TOPIC, Instance.DeletionRequested.TOPIC,
                        Instance.Deleted.TOPIC})

    def __init__(self, data_dir: Path | None = None, write_text: Callable[[Path, str], None] | None = None) -> None:
        """With `data_dir`, export the targets there through `write_text` (an atomic file write)."""
        self.path = Path(data_dir) / TARGETS_FILE if data_dir is not None else None
        self.write_text = write_text

    def apply(self, cur: Cursor, event: Any, t: dict[str, str]) -> None:
        table, at, iid = t[TABLE], iso(event.timestamp), str(event.originator_id)
        if isinstance(event, Instance.Requested):
            cur.execute(f"INSERT INTO {table} (id, kind, owner_id, status, updated_at) "
                        "VALUES (%s, %s, %s, 'provisioning', %s)", (iid, event.kind, str(event.owner_id), at))
        elif isinstance(event, Instance.Provisioned):
            cur.execute(f"UPDATE {table} SET status = 'running', address = %s, updated_at = %s WHERE id = %s",
                        (target_of(event.address), at, iid))
        elif isinstance(event, Instance.Started):
            cur.execute(f"UPDATE {table} SET status = 'running', updated_at = %s WHERE id = %s", (at, iid))
        elif isinstance(event, Instance.OperationFailed):
            if event.kind == "create" or getattr(event, "process_stopped", False):
                cur.execute(f"UPDATE {table} SET status = 'down', updated_at = %s WHERE id = %s", (at, iid))
        elif isinstance(event, Instance.Stopped | Instance.DeletionRequested | Instance.Deleted):
            cur.execute(f"UPDATE {table} SET status = 'down', updated_at = %s WHERE id = %s", (at, iid))

    def after_commit(self, db: Database) -> None:
        if self.path is None or self.write_text is None:
            return
        rows = db.query(f"SELECT id, kind, owner_id, address FROM {TABLE} WHERE status = 'running' "
                        "AND address IS NOT NULL ORDER BY id")
        groups = [{"targets": [r["address"]],
                   "labels": {"instance_id": r["id"], "kind": r["kind"], "owner_id": r["owner_id"]}} for r in rows]
        text = json.dumps(groups, indent=2) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.path.exists() and self.path.read_text() == text):  # unchanged: no write
            self.write_text(self.path, text)


def read_targets(data_dir: Path) -> list[dict[str, Any]]:
    path = Path(data_dir) / TARGETS_FILE
    return json.loads(path.read_text()) if path.exists() else []
