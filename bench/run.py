"""`python -m bench.run`: store appends (PostgreSQL, SQLite) and HTTP latency, in one run, as one table.

Creates two throwaway PostgreSQL databases (`zlh_bench_<hex>_store`, `zlh_bench_<hex>_http`) on the
server named by `--pg` (default `postgresql://postgres@127.0.0.1:5432/postgres`, or
`ZLH_BENCH_PG_URL`), and drops them at the end. Progress goes to stderr; the machine context
line and the table go to stdout.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import secrets
import sqlite3
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg

from bench.stats import Result
from services.infrastructure.database import DatabaseURL

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_dbname(url: str, dbname: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{dbname}"))


def context_line(admin_url: str) -> str:
    with psycopg.connect(DatabaseURL.parse(admin_url).conninfo(), autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pg_version = row[0] if row else "?"
    return (f"machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
            f"PostgreSQL {pg_version}, eventsourcing {version('eventsourcing')}, "
            f"psycopg {version('psycopg')}, SQLite {sqlite3.sqlite_version}")


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def render(results: list[Result | tuple[str, str, str]]) -> str:
    """Aligned plain-text table; a tuple is a ratio row: (label, rate column, p50 column)."""
    header = ("measurement", "n", "ops/s", "p50 ms", "p99 ms", "errors")
    rows: list[tuple[str, ...]] = [header]
    for item in results:
        if isinstance(item, Result):
            rows.append((item.name, str(item.n), _fmt(item.rate, 0), _fmt(item.p50_ms, 2),
                         _fmt(item.p99_ms, 2), str(item.errors)))
        else:
            label, rate, p50 = item
            rows.append((f"  {label}", "", rate, p50, "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    out = [line(rows[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows[1:]]
    notes = [f"note: {r.name}: {r.note}" for r in results if isinstance(r, Result) and r.note]
    return "\n".join(out + notes)


def ratio(a: float, b: float) -> str:
    return "-" if b == 0 or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events appended per store measurement")
    parser.add_argument("--requests", type=int, default=1000, help="requests per HTTP measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent HTTP clients")
    parser.add_argument("--pg", default=os.environ.get("ZLH_BENCH_PG_URL", DEFAULT_PG),
                        help="a PostgreSQL URL whose server may get throwaway databases")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite store measurement")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args(argv)

    from bench.http import http_benchmark
    from bench.store import raw_postgres_inserts, raw_sqlite_inserts, store_appends

    print(context_line(args.pg), flush=True)
    admin = DatabaseURL.parse(args.pg).conninfo()
    prefix = f"zlh_bench_{secrets.token_hex(4)}"
    databases = [f"{prefix}_store", f"{prefix}_http"]
    rows: list[Result | tuple[str, str, str]] = []
    failed = False
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zlh-bench-") as tmp, \
            psycopg.connect(admin, autocommit=True) as admin_conn:
        try:
            for db in databases:
                admin_conn.execute(f'CREATE DATABASE "{db}"')
            store_url = with_dbname(args.pg, databases[0])
            n = args.events

            log(f"PostgreSQL store: {n} appends via ZLH.save ...")
            store_pg, sample = store_appends(store_url, n, "store append, PostgreSQL (ZLH.save)")
            log(f"PostgreSQL raw: {n} INSERT+COMMIT ({len(sample.state)}-byte state) ...")
            raw_pg = raw_postgres_inserts(DatabaseURL.parse(store_url).conninfo(), n, sample,
                                          "raw psycopg INSERT+COMMIT, PostgreSQL")
            rows += [store_pg, raw_pg, ("ratio raw / store", ratio(raw_pg.rate, store_pg.rate),
                                        ratio(raw_pg.p50_ms, store_pg.p50_ms))]

            if not args.no_sqlite:
                log(f"SQLite store and raw: {n} appends each ...")
                store_sq, sample_sq = store_appends(f"sqlite:///{tmp}/store.sqlite3", n,
                                                    "store append, SQLite WAL (ZLH.save)")
                raw_sq = raw_sqlite_inserts(f"{tmp}/raw.sqlite3", n, sample_sq,
                                            "raw sqlite3 INSERT+COMMIT, SQLite WAL")
                rows += [store_sq, raw_sq, ("ratio raw / store", ratio(raw_sq.rate, store_sq.rate),
                                            ratio(raw_sq.p50_ms, store_sq.p50_ms))]

            if not args.no_http:
                workdir = Path(tmp) / "http"
                workdir.mkdir()
                health, post = http_benchmark(with_dbname(args.pg, databases[1]), workdir, args.requests,
                                              args.concurrency, log)
                rows += [replace(health, name=f"HTTP {health.name}"), replace(post, name=f"HTTP {post.name}"),
                         ("ratio POST / healthz", ratio(post.rate, health.rate),
                          ratio(post.p50_ms, health.p50_ms))]
        except Exception:
            failed = True
            log("benchmark failed:\n" + traceback.format_exc())
        finally:
            for db in databases:
                try:
                    admin_conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                except psycopg.Error as exc:
                    log(f"could not drop database {db}: {exc}")
    log(f"done in {time.perf_counter() - started:.0f}s; dropped {', '.join(databases)}")
    if rows:
        print(render(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
