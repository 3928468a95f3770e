"""`zlh migrate`: create every table, idempotently, safe when several processes run it at once.

PostgreSQL: the whole migration runs under a session advisory lock, so concurrent
migrators take turns. SQLite: an exclusive `fcntl` lock on a file beside the database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from projections.registry import all_projections
from services.infrastructure.database import DatabaseURL, ReadModelDB, ensure_sqlite_file
from services.infrastructure.dead_letters import create_dead_letters_table
from services.infrastructure.heartbeats import create_heartbeats_table
from services.infrastructure.log_following import create_positions_table
from services.infrastructure.projection_runner import ProjectionRunner
from services.infrastructure.store import ZLH, store_env
from services.infrastructure.token_usage import create_usage_table

ADVISORY_LOCK_KEY = 0x7A6C68  # "zlh"


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
    else:
        ensure_sqlite_file(url)
        fd = os.open(str(Path(url.path)) + ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def migrate(url: DatabaseURL) -> None:
    """Create the event store's tables, the positions table and every read model's tables."""
    with _migration_lock(url):
        app = ZLH(env=store_env(url, create_table=True, pool_size=1))
        app.close()
        db = ReadModelDB(url, pool_size=1)
        try:
            with db.transaction() as cur:
                create_positions_table(cur)
                create_heartbeats_table(cur)
                create_dead_letters_table(cur)
                create_usage_table(cur)
                for projection in all_projections():
                    ProjectionRunner(app, db, projection).migrate(cur)
        finally:
            db.close()
