"""Event-store appends: our `ZLH` store versus a raw single-row INSERT + COMMIT baseline.

Each store save is one new `User` aggregate with one event (one transaction), single-threaded.
The baselines write rows of the same shape as the library's events table, with the exact
state bytes and topic the store writes for such a user, one row per transaction.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from bench.stats import Result
from domain.user import User
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import ZLH, store_env

RAW_TABLE = "bench_raw_events"


@dataclass(frozen=True)
class SampleRow:
    """What the store writes for one new user: the baselines insert rows just like it."""

    topic: str
    state: bytes


def _warmup_count(n: int) -> int:
    return max(10, min(200, n // 10))


def _time_calls(name: str, n: int, call: Callable[[str], None]) -> Result:
    """Warm up, then time `n` calls of `call(tag)`; each tag is unique across the whole run."""
    for i in range(_warmup_count(n)):
        call(f"w{i}")
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(f"u{i}")
        latencies.append(time.perf_counter() - t0)
    return Result(name, n, time.perf_counter() - start, latencies)


def store_appends(url: str, n: int, name: str) -> tuple[Result, SampleRow]:
    """Migrate `url`, then time `n` saves of one new aggregate each through `ZLH.save`."""
    parsed = DatabaseURL.parse(url)
    migrate(parsed)
    app = ZLH(env=store_env(parsed, pool_size=1))
    try:
        first = app.mapper.to_stored_event(User(email="sample@x.example", admin=False).collect_events()[0])
        sample = SampleRow(topic=first.topic, state=bytes(first.state))
        result = _time_calls(name, n, lambda tag: app.save(User(email=f"{tag}@x.example", admin=False)))
    finally:
        app.close()
    return result, sample


def raw_postgres_inserts(conninfo: str, n: int, sample: SampleRow, name: str) -> Result:
    """Time `n` single-row `INSERT ... RETURNING notification_id` + COMMIT with psycopg."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            f"CREATE TABLE {RAW_TABLE} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute(f"CREATE UNIQUE INDEX {RAW_TABLE}_nid ON {RAW_TABLE} (notification_id ASC)")
        conn.commit()
        sql = (
            f"INSERT INTO {RAW_TABLE} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s) RETURNING notification_id"
        )
        cur = conn.cursor()

        def insert_one(_: str) -> None:
            cur.execute(sql, (uuid.uuid4(), 1, sample.topic, sample.state))
            cur.fetchone()
            conn.commit()

        return _time_calls(name, n, insert_one)


def raw_sqlite_inserts(path: str, n: int, sample: SampleRow, name: str) -> Result:
    """Time `n` single-row `BEGIN; INSERT ... RETURNING rowid; COMMIT` (WAL, like the library)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"CREATE TABLE {RAW_TABLE} (originator_id TEXT, originator_version INTEGER, topic TEXT, "
            "state BLOB, PRIMARY KEY (originator_id, originator_version))"
        )
        sql = f"INSERT INTO {RAW_TABLE} VALUES (?, ?, ?, ?) RETURNING rowid"

        def insert_one(_: str) -> None:
            conn.execute("BEGIN")
            conn.execute(sql, (str(uuid.uuid4()), 1, sample.topic, sample.state)).fetchone()
            conn.execute("COMMIT")

        return _time_calls(name, n, insert_one)
    finally:
        conn.close()
