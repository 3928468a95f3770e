"""`python -m bench.rebuild`: events/s of `zlh projections rebuild --all` and `zlh audit verify --all`.

On a throwaway PostgreSQL database it writes a log of N events (default 200,000) of completed creates
through the project's store, in batches (bench/eventlog.py), then, per round: reads the whole events
table raw with psycopg in pages of 1,000 (the baseline: keyset pagination on `notification_id`, rows
fetched as tuples, nothing decoded), runs `zlh projections rebuild --all`, and `zlh audit verify --all`,
each as the real command in a child process. Events/s is the log's events over the command's wall time
(interpreter start-up included, as an operator sees it); the rebuild's own per-projection figures
(each projection reads the whole log) are shown beside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.eventlog import completed_creates
from bench.procs import ROOT, Resources, project_env, run_child, sigterm_as_interrupt
from bench.run import DEFAULT_PG, context_line, log
from bench.stats import EN_DASH
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import EVENTS_TABLE, ZLH, store_env

RAW_PAGE = 1000


@dataclass
class Measure:
    """Events/s of one kind of work over the rounds, and what each run noted."""

    name: str
    rates: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def raw_read(conninfo: str, page: int = RAW_PAGE) -> tuple[int, float]:
    """Read every event row in pages of `page` (keyset on notification_id); (rows, seconds)."""
    sql = (f"SELECT notification_id, originator_id, originator_version, topic, state FROM {EVENTS_TABLE} "
           "WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        last = 0
        while True:
            batch = conn.execute(sql, (last, page)).fetchall()
            if not batch:
                break
            rows += len(batch)
            last = batch[-1][0]
    return rows, time.perf_counter() - started


def build_log(database_url: str, n_events: int) -> int:
    """Migrate the database and fill it with about `n_events` events; return the log's head."""
    url = DatabaseURL.parse(database_url)
    migrate(url)
    app = ZLH(env=store_env(url, pool_size=1))
    try:
        step = max(n_events // 5, 1)
        marks = iter(range(step, n_events + step, step))
        mark = next(marks)
        started = time.perf_counter()

        def progress(events: int) -> None:
            nonlocal mark
            if events >= mark:
                log(f"  ... {events:,} events ({events / (time.perf_counter() - started):,.0f}/s)")
                mark = next(marks, n_events * 10)

        creates, events = completed_creates(app, n_events, progress)
        head = app.head()
    finally:
        app.close()
    log(f"log written: {events:,} events ({creates:,} completed creates) in {time.perf_counter() - started:.1f}s")
    return head


def _zlh(*args: str) -> list[str]:
    return [sys.executable, "-m", "api.cli", *args]


def rebuild_benchmark(database_url: str, workdir: Path, n_events: int, rounds: int) -> tuple[int, list[Measure]]:
    """Build the log, then measure raw read, rebuild and verify `rounds` times; (events in the log, measures)."""
    log(f"rebuild: writing a log of {n_events:,} events through the store ...")
    head = build_log(database_url, n_events)
    env = project_env(database_url, workdir / "data", COLUMNS="100")
    conninfo = DatabaseURL.parse(database_url).conninfo()
    raw = Measure(f"baseline: raw psycopg read of `{EVENTS_TABLE}`, pages of {RAW_PAGE:,}")
    rebuild = Measure("`zlh projections rebuild --all`")
    verify = Measure("`zlh audit verify --all`")
    for round_ in range(1, rounds + 1):
        log(f"rebuild round {round_}/{rounds}: raw read ...")
        rows, seconds = raw_read(conninfo)
        raw.rates.append(rows / seconds)
        raw.seconds.append(seconds)
        if rows != head:
            raw.notes.append(f"read {rows:,} rows, head is {head:,}")

        log(f"rebuild round {round_}/{rounds}: zlh projections rebuild --all ...")
        code, out, err, seconds = run_child(_zlh("projections", "rebuild", "--all"), env, ROOT, timeout=3600)
        if code != 0:
            raise RuntimeError(f"zlh projections rebuild --all exited {code}:\n{err[-3000:]}")
        per_projection = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        rates = [p["events_per_second"] for p in per_projection if p.get("events_per_second")]
        rebuild.rates.append(head / seconds)
        rebuild.seconds.append(seconds)
        if rates:
            each = ", ".join(f"{p['name']} {p['events_per_second']:,.0f}"
                             for p in sorted(per_projection, key=lambda p: p["events_per_second"]))
            rebuild.notes.append(f"round {round_}: {len(per_projection)} projections rebuilt from one read of the "
                                 f"log (one transaction per page of 5,000 events), then swapped in one by one; "
                                 f"events/s by their own count: {each}")

        log(f"rebuild round {round_}/{rounds}: zlh audit verify --all ...")
        code, out, err, seconds = run_child(_zlh("audit", "verify", "--all"), env, ROOT, timeout=3600)
        summary = next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("{")), {})
        if code != 0:
            raise RuntimeError(f"zlh audit verify --all exited {code}: {summary}\n{err[-3000:]}")
        verify.rates.append(head / seconds)
        verify.seconds.append(seconds)
        verify.notes.append(f"{summary.get('streams', 0):,} streams, {summary.get('intact', 0):,} intact")
    return head, [rebuild, verify, raw]


def _range(values: list[float], digits: int = 0, unit: str = "") -> str:
    low, high = f"{min(values):,.{digits}f}", f"{max(values):,.{digits}f}"
    return (low if low == high else f"{low}{EN_DASH}{high}") + unit


def render(head: int, measures: list[Measure]) -> str:
    """A markdown table: work | events/s | wall time | ratio to the raw read, over the rounds."""
    baseline = statistics.mean(measures[-1].rates)
    lines = [f"log: {head:,} events", "",
             "| work | events/s | wall time | ratio to the raw read |", "| --- | --- | --- | --- |"]
    for m in measures:
        ratio = statistics.mean(m.rates) / baseline if baseline else float("nan")
        lines.append(f"| {m.name} | {_range(m.rates)} | {_range(m.seconds, 1, ' s')} | {ratio:.3f} |")
    notes = sorted({f"{m.name}: {note}" for m in measures for note in m.notes})
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events in the log (default 200,000)")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each (default 1)")
    parser.add_argument("--pg", default=os.environ.get("ZLH_BENCH_PG_URL", DEFAULT_PG),
                        help="a PostgreSQL URL whose server may get throwaway databases")
    args = parser.parse_args(argv)
    sigterm_as_interrupt()
    print(context_line(args.pg), flush=True)
    with Resources(args.pg) as res, tempfile.TemporaryDirectory(prefix="zlh-bench-rebuild-") as tmp:
        head, measures = rebuild_benchmark(res.database("rebuild"), Path(tmp), args.events, args.rounds)
    print(render(head, measures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
