"""`zlh migrate`: versioned schema steps, each applied once and recorded, safe when several processes run it.

Two kinds of schema live in the database, and each changes its own way:

- **Numbered steps** (`STEPS`) for what is not derived from the log: the event store, its hash chain,
  log positions, heartbeats, dead letters. A step runs once, in order, and is recorded in
  `zlh_migrations` (version, name, applied_at). A schema change is a new step appended to the list,
  never an edit of an old one, so it reaches every existing database. Steps are written so they also
  hold on a database made before this table existed (they create only what is missing).
- **Read models** are derived, so they are never altered by hand: each projection declares a `version`;
  when a database records another version for it (or none while its tables exist), `zlh migrate`
  rebuilds it from position 0 into shadow tables and swaps them in (the old tables keep serving meanwhile),
  then records the new version. A projection whose tables change bumps its `version`.

PostgreSQL: everything runs under a session advisory lock, so concurrent migrators take turns.
SQLite: an exclusive `fcntl` lock on a file beside the database (created 0600, like the database).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from projections.base import Projection
from projections.registry import all_projections
from services.infrastructure.chain import postgres_chain_ddl, sqlite_chain_ddl
from services.infrastructure.database import DatabaseURL, PortableCursor, ReadModelDB, ensure_sqlite_file
from services.infrastructure.dead_letters import create_dead_letters_table
from services.infrastructure.heartbeats import create_heartbeats_table
from services.infrastructure.log_following import SQLITE_EVENTS, create_positions_table
from services.infrastructure.projection_runner import ProjectionRunner
from services.infrastructure.store import EVENTS_TABLE, ZLH, store_env
from services.infrastructure.token_usage import create_usage_table

log = logging.getLogger(__name__)

ADVISORY_LOCK_KEY = 0x7A6C68  # "zlh"
_MEMORY_MIGRATIONS = threading.Lock()
MIGRATIONS = "zlh_migrations"
PROJECTION_VERSIONS = "zlh_projection_versions"


@dataclass(frozen=True)
class Context:
    """What a step may use: the database URL and the read-model database (a step opens its own transaction;
    every step only creates what is missing, so one interrupted half-way is simply run again)."""

    url: DatabaseURL
    db: ReadModelDB


def _event_store(ctx: Context) -> None:
    """The library's tables (events, snapshots), made by the library itself with table creation on."""
    ZLH(env=store_env(ctx.url, create_table=True, pool_size=1)).close()


def _infrastructure(ctx: Context) -> None:
    with ctx.db.transaction() as cur:
        create_positions_table(cur)
        create_heartbeats_table(cur)


def _node_heartbeats(ctx: Context) -> None:
    from services.infrastructure.node_health import create_node_heartbeats_table

    with ctx.db.transaction() as cur:
        create_node_heartbeats_table(cur)


def _dead_letters(ctx: Context) -> None:
    with ctx.db.transaction() as cur:
        create_dead_letters_table(cur)


def _chain_in_the_database(ctx: Context) -> None:
    """The hash table and the trigger that chains (PostgreSQL) or guards (SQLite) every insert."""
    if ctx.url.dialect == "memory":
        return  # the in-memory profile keeps its events in the library's in-memory recorder: nothing to chain
    statements: list = (postgres_chain_ddl("public", EVENTS_TABLE) if ctx.url.dialect == "postgres"
                        else sqlite_chain_ddl(SQLITE_EVENTS))
    with ctx.db.transaction() as cur:
        for statement in statements:
            cur.execute(statement)


def _token_usage(ctx: Context) -> None:
    """When each API token was last used (telemetry, not a read model: rebuilds leave it alone)."""
    with ctx.db.transaction() as cur:
        create_usage_table(cur)


#: The numbered steps, in order. Append; never edit or reorder a step that has shipped.
STEPS: tuple[tuple[int, str, Callable[[Context], None]], ...] = (
    (1, "event store", _event_store),
    (2, "positions and heartbeats", _infrastructure),
    (3, "dead letters", _dead_letters),
    (4, "hash chain in the database", _chain_in_the_database),
    (5, "token usage", _token_usage),
    (6, "node heartbeats", _node_heartbeats),
)


@contextmanager
def _migration_lock(url: DatabaseURL) -> Iterator[None]:
    if url.dialect == "postgres":
        import psycopg

        with psycopg.connect(url.conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    elif url.dialect == "memory":
        with _MEMORY_MIGRATIONS:
            yield
    else:
        path = Path(url.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(path) + ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _create_bookkeeping(cur: PortableCursor) -> None:
    cur.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {PROJECTION_VERSIONS} "
                "(name TEXT PRIMARY KEY, version INTEGER NOT NULL, applied_at TEXT NOT NULL)")


def applied_steps(db: ReadModelDB) -> list[int]:
    return [int(r["version"]) for r in db.query(f"SELECT version FROM {MIGRATIONS} ORDER BY version")]


def migrate(url: DatabaseURL) -> list[str]:
    """Apply every step not applied yet, then bring every read model to its version; what was done."""
    done: list[str] = []
    ensure_sqlite_file(url)
    with _migration_lock(url):
        db = ReadModelDB(url, pool_size=1)
        try:
            with db.transaction() as cur:
                _create_bookkeeping(cur)
            applied = set(applied_steps(db))
            for version, name, step in STEPS:
                if version in applied:
                    continue
                step(Context(url, db))
                with db.transaction() as cur:
                    cur.execute(f"INSERT INTO {MIGRATIONS} (version, name, applied_at) VALUES (%s, %s, %s)",
                                (version, name, _now()))
                log.info("migration %d (%s) applied", version, name)
                done.append(f"step {version}: {name}")
            done += _read_models(url, db)
        finally:
            db.close()
    return done


def _read_models(url: DatabaseURL, db: ReadModelDB) -> list[str]:
    """Create missing read models; rebuild those whose recorded version is not their current one."""
    recorded = {r["name"]: int(r["version"]) for r in db.query(f"SELECT name, version FROM {PROJECTION_VERSIONS}")}
    done: list[str] = []
    app = ZLH(env=store_env(url, pool_size=1))
    try:
        for projection in all_projections():
            runner = ProjectionRunner(app, db, projection)
            have = recorded.get(projection.name)
            if have == projection.version:
                continue
            if have is None and not _tables_exist(db, projection):
                with db.transaction() as cur:
                    runner.migrate(cur)
                action = "created"
            else:
                with db.transaction() as cur:
                    runner.migrate(cur, indexes=False)  # positions, any table the old version lacked: it keeps serving
                runner.rebuild()
                action = f"rebuilt (version {have} -> {projection.version})"
            with db.transaction() as cur:
                cur.execute(f"INSERT INTO {PROJECTION_VERSIONS} (name, version, applied_at) VALUES (%s, %s, %s) "
                            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, "
                            "applied_at = excluded.applied_at", (projection.name, projection.version, _now()))
            log.info("read model %s %s", projection.name, action)
            done.append(f"read model {projection.name}: {action}")
    finally:
        app.close()
    return done


def _tables_exist(db: ReadModelDB, projection: Projection) -> bool:
    name = projection.tables[0].name
    if db.dialect == "postgres":
        rows = db.query("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                        "AND table_name = %s", (name,))
    else:
        rows = db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", (name,))
    return bool(rows)

