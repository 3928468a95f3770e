"""The read-model database: one small interface over SQLite and PostgreSQL.

SQL is written once with `%s` placeholders and portable types (TEXT, BIGINT,
INTEGER); on SQLite the placeholders become `?`. Write transactions are
serialized per database (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: row locks taken
by the callers with `FOR UPDATE`).

`memory://NAME` is the in-memory profile of the fast tests: the event store is the
library's in-memory recorder and the read models live in one in-memory SQLite
database per NAME, shared by every `ReadModelDB` of the process and serialized by a
lock (one connection, so nothing of SQLite's shared-cache locking is involved).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlparse

Dialect = Literal["sqlite", "postgres", "memory"]


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed `ZLH_DATABASE_URL`."""

    dialect: Dialect
    path: str = ""  # sqlite
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        if url.startswith("memory://"):
            return cls(dialect="memory", path=url[len("memory://"):] or "default")
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            if not path:
                raise ValueError("sqlite URL needs a path: sqlite:///var/zlh.sqlite3")
            return cls(dialect="sqlite", path=path)
        parsed = urlparse(url)
        if parsed.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            query = parse_qs(parsed.query)
            return cls(
                dialect="postgres",
                host=parsed.hostname or query.get("host", ["127.0.0.1"])[0],
                port=parsed.port or 5432,
                user=unquote(parsed.username or ""),
                password=unquote(parsed.password or ""),
                dbname=(parsed.path or "/").lstrip("/"),
            )
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH, postgresql://... or memory://NAME")

    def conninfo(self) -> str:
        """A libpq connection string (PostgreSQL only)."""
        parts = {"host": self.host, "port": str(self.port), "dbname": self.dbname}
        if self.user:
            parts["user"] = self.user
        if self.password:
            parts["password"] = self.password
        return " ".join(f"{k}='{v}'" for k, v in parts.items())


def ensure_sqlite_file(url: DatabaseURL) -> None:
    """Create a SQLite database file readable by its owner only (0600) from the start, if it is missing.

    `os.open` with the mode, not a chmod afterwards: there is no moment when others could open it. SQLite
    creates its `-wal` and `-shm` files with the database file's permissions.
    """
    if url.dialect != "sqlite" or url.path.startswith((":memory:", "file:")):
        return
    path = Path(url.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


_MEMORY: dict[str, tuple[sqlite3.Connection, threading.RLock]] = {}
_MEMORY_LOCK = threading.Lock()


def _memory_database(name: str) -> tuple[sqlite3.Connection, threading.RLock]:
    """The process's one connection to the in-memory database `name` (made on first use)."""
    with _MEMORY_LOCK:
        if name not in _MEMORY:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            _MEMORY[name] = (conn, threading.RLock())
        return _MEMORY[name]


def drop_memory_database(name: str) -> None:
    """Forget an in-memory database (a test's, when it is done)."""
    with _MEMORY_LOCK:
        entry = _MEMORY.pop(name, None)
    if entry is not None:
        entry[0].close()


class ReadModelDB:
    """Connections for read models and process-manager positions."""

    def __init__(self, url: DatabaseURL, pool_size: int = 4) -> None:
        self.url = url
        #: The SQL dialect spoken (the in-memory profile speaks SQLite's).
        self.dialect: Literal["sqlite", "postgres"] = "postgres" if url.dialect == "postgres" else "sqlite"
        #: Whether the event log lives in this very database (SQLite files): followers then read it through
        #: their own transaction (see `read_log_page`).
        self.holds_the_log = url.dialect == "sqlite"
        self._local = threading.local()
        self._pool: Any = None
        self._memory: tuple[sqlite3.Connection, threading.RLock] | None = None
        if url.dialect == "postgres":
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(
                url.conninfo(),
                min_size=1,
                max_size=pool_size,
                kwargs={"row_factory": dict_row, "autocommit": False},
                open=True,
                name="zlh-read-models",
            )
        elif url.dialect == "memory":
            self._memory = _memory_database(url.path)
        else:
            ensure_sqlite_file(url)

    # SQLite: one connection per thread, autocommit mode with explicit transactions.
    def _sqlite(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.url.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _sqlite_connection(self) -> Iterator[sqlite3.Connection]:
        if self._memory is None:
            yield self._sqlite()
            return
        conn, lock = self._memory
        with lock:
            yield conn

    @contextmanager
    def transaction(self, pipeline: bool = False) -> Iterator[PortableCursor]:
        """A write transaction: commits on success, rolls back on any exception.

        `pipeline` (PostgreSQL): psycopg's pipeline mode, statements sent without waiting for each answer;
        an error may then surface at a later statement or at the commit, and rolls the whole block back.
        """
        if self.dialect == "sqlite":
            with self._sqlite_connection() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield PortableCursor(conn.cursor(), "sqlite", self.holds_the_log)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        elif pipeline:
            with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                yield PortableCursor(conn.cursor(), "postgres", False)
        else:
            with self._pool.connection() as conn, conn.transaction():
                yield PortableCursor(conn.cursor(), "postgres", False)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read-only query and return its rows as dicts."""
        if self.dialect == "sqlite":
            with self._sqlite_connection() as conn:
                return [dict(r) for r in conn.execute(_to_sqlite(sql), tuple(params)).fetchall()]
        with self._pool.connection() as conn:
            rows = conn.execute(sql, tuple(params)).fetchall()
            conn.rollback()
            return list(rows)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class PortableCursor:
    """A cursor that takes `%s` placeholders on both dialects and returns dict rows."""

    def __init__(self, cursor: Any, dialect: Literal["sqlite", "postgres"], holds_the_log: bool = False) -> None:
        self._cursor = cursor
        self.dialect = dialect
        self.holds_the_log = holds_the_log

    def execute(self, sql: str, params: Sequence[Any] = ()) -> PortableCursor:
        if self.dialect == "sqlite":
            self._cursor.execute(_to_sqlite(sql), tuple(params))
        else:
            self._cursor.execute(sql, tuple(params))
        return self

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> PortableCursor:
        """One statement for many parameter rows (pipelined by psycopg on PostgreSQL)."""
        rows = [tuple(p) for p in params]
        if rows:
            self._cursor.executemany(_to_sqlite(sql) if self.dialect == "sqlite" else sql, rows)
        return self

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @contextmanager
    def savepoint(self, name: str = "zlh_event") -> Iterator[None]:
        """Run a block that can fail without aborting the transaction: on error, roll back only the block."""
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.execute(f"RELEASE SAVEPOINT {name}")


def _to_sqlite(sql: str) -> str:
    return sql.replace("%s", "?").replace(" FOR UPDATE", "")
