"""`python -m bench.compare`: `zlh serve` side by side with a plain FastAPI + psycopg service (issue 13).

Starts, each on its own port and its own throwaway PostgreSQL database on one server:

- the project: `zlh serve` in the embedded mode (API, every worker and the controller in one process),
  the local driver, `ZLH_LOCAL_STEP_DELAY=1d` so provisioning never gets past its first pause and only
  the API path is measured; a reader customer with 3 instances (created through the API) and a writer
  customer for the creates. The per-token rate limit and quotas are lifted (they exist to stop abuse;
  wrk's 32 connections share one token);
- the baseline: `python -m bench.baseline_service` (one psycopg pool of 4 to 8 connections, uvicorn with
  the arguments `zlh serve` uses), seeded with one user, a token and 3 instances;

and drives both with Debian's `wrk` (`-t2 -c32 -d8s --latency` by default), per work: a warm-up of each,
then rounds interleaved (project, baseline, project, baseline), waiting before each project run until
its read models and workers have caught up with the log. Works: `healthz`, `instances`
(`GET /api/instances`), `operation` (`GET /api/operations/{id}`), `create` (`POST /api/instances`, a
unique Idempotency-Key and name per request), and `rebuild` (bench/rebuild.py: events/s of
`zlh projections rebuild --all` and `zlh audit verify --all` against a raw read of the events table).

`--queued N` first fills the project's log with N queued create operations (of other customers, 10
each), to see whether the API slows down with a backlog. Prints markdown: the side-by-side table, the
resident memory peak of each server process, every run, and the rebuild table. Progress goes to
stderr. Everything started is stopped and every database dropped, on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.procs import ROOT, Resources, RssSampler, project_env, sigterm_as_interrupt, stop_process, wait_until
from bench.run import context_line, log
from bench.stats import EN_DASH, TIMES
from bench.wrk import CREATE_LUA, INSTALL_HINT, WrkError, WrkResult, run_wrk

ADMIN_TOKEN = "bench-admin-token"
HTTP_WORKS = ("healthz", "instances", "operation", "create")
WORKS = (*HTTP_WORKS, "rebuild")
LABELS = {
    "healthz": "`GET /healthz` (both sync constant endpoints)",
    "instances": "`GET /api/instances`, 3 instances (token lookup + the owner's rows)",
    "operation": "`GET /api/operations/{id}` (token lookup + one row)",
    "create": "`POST /api/instances` (token lookup + one INSERT + COMMIT)",
}
#: Lifted for the benchmark: one token behind 32 connections would be rate limited at once.
UNLIMITED = {"ZLH_RATE_LIMIT_PER_MINUTE": "1000000000", "ZLH_AUTH_FAILURES_PER_MINUTE": "1000000000",
             "ZLH_MAX_INSTANCES_PER_USER": "1000000000"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (from /proc), NaN if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class Target:
    """One server under load: where it answers, whom to send, and how to wait until it is quiet."""

    name: str
    url: str
    pid: int
    reader_token: str
    writer_token: str
    operation_id: str
    rss: RssSampler
    settle: Callable[[], None] = lambda: None
    log_path: Path | None = None


@dataclass
class Run:
    work: str
    target: str
    round: int
    result: WrkResult
    cpu_ms_per_request: float


@dataclass
class Measurements:
    runs: list[Run] = field(default_factory=list)

    def results(self, work: str, target: str) -> list[WrkResult]:
        return [r.result for r in self.runs if r.work == work and r.target == target]


# --- The two servers ---------------------------------------------------------------------------------------------


class ProjectServer:
    """`zlh serve` (embedded mode) on its own database, with its customers made through the API."""

    def __init__(self, res: Resources, workdir: Path, queued: int, writers: int = 1) -> None:
        self.res, self.workdir, self.queued, self.writers = res, workdir, queued, writers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.log_path = workdir / "zlh-serve.log"

    def start(self) -> Target:
        database_url = self.database_url = self.res.database("project")
        if self.queued:
            self._fill_queue(database_url)
        env = project_env(database_url, self.workdir / "data", ZLH_BOOTSTRAP_ADMIN_TOKEN=ADMIN_TOKEN,
                          ZLH_LOCAL_STEP_DELAY="1d", ZLH_DRIVER="local", **UNLIMITED)
        log(f"project: zlh serve (embedded) on :{self.port}; log {self.log_path}")
        self.proc = self.res.process([sys.executable, "-m", "api.cli", "serve", "--port", str(self.port)],
                                     self.log_path, env, ROOT)
        rss = RssSampler(self.proc.pid)
        rss.start()
        self.res.callback(rss.stop)
        wait_until(self._ready, 300, "zlh serve was not ready", alive=self._alive)
        reader = self._customer("bench-reader@bench.example")
        operations = [self._create(reader, f"seed-{i}", f"seed{i}") for i in range(3)]
        writer = ",".join(self._customer(f"bench-writer{i}@bench.example") for i in range(self.writers))
        started = time.monotonic()
        self.settle(timeout=3600 if self.queued else 120)
        if self.queued:
            log(f"project: caught up with the {self.queued:,} queued operations in {time.monotonic() - started:.0f}s")
        log(f"project: {self.log_state()}")
        return Target("project", self.url, self.proc.pid, reader, writer, operations[0], rss, self.settle,
                      self.log_path)

    def _fill_queue(self, database_url: str) -> None:
        from bench.eventlog import queued_creates
        from services.infrastructure.database import DatabaseURL
        from services.infrastructure.migrations import migrate
        from services.infrastructure.store import ZLH, store_env

        url = DatabaseURL.parse(database_url)
        migrate(url)
        app = ZLH(env=store_env(url, pool_size=1))
        try:
            started = time.perf_counter()
            creates, events = queued_creates(app, self.queued)
            log(f"project: {creates:,} queued create operations written ({events:,} events) "
                f"in {time.perf_counter() - started:.1f}s")
        finally:
            app.close()

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"zlh serve exited with {self.proc.returncode}:\n{tail}")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _customer(self, email: str) -> str:
        response = httpx.post(f"{self.url}/api/admin/users", json={"email": email}, headers=self.admin, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"POST /api/admin/users answered {response.status_code}: {response.text}")
        return str(response.json()["token"])

    def _create(self, token: str, key: str, name: str) -> str:
        response = httpx.post(f"{self.url}/api/instances", timeout=30,
                              json={"kind": "game", "name": name, "template": "minecraft"},
                              headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/instances answered {response.status_code}: {response.text}")
        return str(response.json()["operation_id"])

    def log_state(self) -> str:
        """The log's head and the operations' phases, from the project's database (read models)."""
        import psycopg

        from services.infrastructure.database import DatabaseURL

        with psycopg.connect(DatabaseURL.parse(self.database_url).conninfo()) as conn:
            head = conn.execute("SELECT max(notification_id) FROM zlh_events").fetchone()
            phases = conn.execute("SELECT phase, count(*) FROM rm_operations GROUP BY phase ORDER BY phase").fetchall()
        return (f"{(head[0] if head else 0) or 0:,} events in the log; operations by phase: "
                + ", ".join(f"{phase} {n:,}" for phase, n in phases))

    def lags(self) -> dict[str, int]:
        """Every projection's and every queue's lag behind the log (what the admin API reports)."""
        lags = {}
        for route, prefix in (("/api/admin/projections", "projection "), ("/api/admin/queues", "queue ")):
            response = httpx.get(f"{self.url}{route}", headers=self.admin, timeout=30)
            response.raise_for_status()
            lags |= {prefix + item["name"]: int(item["lag"]) for item in response.json()["items"]}
        return lags

    def settle(self, timeout: float = 120) -> None:
        """Wait until the read models and the workers have caught up with the log (warn, don't fail, on timeout)."""
        lags: dict[str, int] = {}

        def quiet() -> bool:
            nonlocal lags
            lags = self.lags()
            # Provisioning claims no more than it runs (ZLH_LOCAL_STEP_DELAY holds the first operations
            # forever), so its lag is the queue held back, never 0 once creates were measured: not waited for.
            return all(lag == 0 for name, lag in lags.items() if name != "queue provisioning")

        try:
            wait_until(quiet, timeout, "not caught up", every=0.25, alive=self._alive)
        except TimeoutError:
            behind = {name: lag for name, lag in lags.items() if lag}
            log(f"project: still behind the log after {timeout:.0f}s, measuring anyway: {behind}")


class BaselineServer:
    """bench/baseline_service.py on its own database."""

    def __init__(self, res: Resources, workdir: Path, writers: int = 1) -> None:
        self.res, self.workdir, self.writers = res, workdir, writers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "baseline.log"

    def start(self) -> Target:
        import json

        database_url = self.res.database("baseline")
        seed_path = self.workdir / "baseline-seed.json"
        env = project_env(database_url, self.workdir / "baseline-data")
        log(f"baseline: bench.baseline_service on :{self.port}; log {self.log_path}")
        proc = self.res.process([sys.executable, "-m", "bench.baseline_service", "--database-url", database_url,
                                 "--port", str(self.port), "--seed-out", str(seed_path)], self.log_path, env, ROOT)
        rss = RssSampler(proc.pid)
        rss.start()
        self.res.callback(rss.stop)

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"the baseline exited with {proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")

        def ready() -> bool:
            try:
                return seed_path.exists() and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 120, "the baseline was not ready", alive=alive)
        seed = json.loads(seed_path.read_text())
        # Several writers: the same token (a plain INSERT costs the same whoever the owner is).
        return Target("baseline", self.url, proc.pid, seed["token"], ",".join([seed["token"]] * self.writers),
                      seed["operation_ids"][0], rss, log_path=self.log_path)


# --- Load -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: float
    lua: Path
    py_spy: Path | None = None


@contextlib.contextmanager
def profiled(target: Target, load: Load, name: str) -> Iterator[None]:
    """With `--py-spy DIR`: py-spy records `target` (the project only) while the block runs."""
    if load.py_spy is None or target.name != "project":
        yield
        return
    import shutil
    import subprocess

    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    load.py_spy.mkdir(parents=True, exist_ok=True)
    command = [binary, "record", "--pid", str(target.pid), "--duration", f"{max(1, int(load.duration) - 1)}",
               "--rate", "100", "--format", "raw", "--nolineno", "--threads", "--nonblocking",
               "--output", str(load.py_spy / f"{name}.txt")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield
    finally:
        try:
            _, err = proc.communicate(timeout=30)
            if proc.returncode:
                log(f"py-spy exited with {proc.returncode}: {err.strip()[-500:]}")
        except BaseException:
            stop_process(proc, grace=5)
            raise


def drive(target: Target, work: str, load: Load) -> tuple[WrkResult, float]:
    """One wrk run of `work` against `target`; (the result, the server's CPU ms per request)."""
    auth = {"Authorization": f"Bearer {target.reader_token}"}
    common = {"threads": load.threads, "connections": load.connections, "duration": load.duration}
    before = cpu_seconds(target.pid)
    if work == "healthz":
        result = run_wrk(f"{target.url}/healthz", **common)
    elif work == "instances":
        result = run_wrk(f"{target.url}/api/instances", headers=auth, **common)
    elif work == "operation":
        result = run_wrk(f"{target.url}/api/operations/{target.operation_id}", headers=auth, **common)
    elif work == "create":
        prefix = "b" + secrets.token_hex(4)  # names: a letter, then [a-z0-9-]
        result = run_wrk(f"{target.url}/api/instances", script=load.lua, script_args=[target.writer_token, prefix],
                         **common)
    else:
        raise ValueError(work)
    cpu = (cpu_seconds(target.pid) - before) * 1000 / max(result.requests, 1)
    return result, cpu


def quiet(targets: list[Target], pause: float) -> None:
    """Before any run: every server has caught up (the project's workers would steal the other's CPU), then a pause."""
    for target in targets:
        target.settle()
    time.sleep(pause)


def measure(targets: list[Target], works: list[str], load: Load, rounds: int, warmup: float,
            pause: float) -> Measurements:
    measured = Measurements()
    for work in works:
        if warmup > 0:
            for target in targets:
                quiet(targets, 0)
                log(f"{work}: warm-up of {target.name} ({warmup:g}s)")
                drive(target, work, Load(load.threads, load.connections, warmup, load.lua))
        for round_ in range(1, rounds + 1):
            for target in targets:
                quiet(targets, pause)
                with profiled(target, load, f"{work}-round{round_}"):
                    result, cpu = drive(target, work, load)
                measured.runs.append(Run(work, target.name, round_, result, cpu))
                errors = f", {result.errors} errors" if result.errors else ""
                log(f"{work} round {round_}/{rounds} {target.name}: {result.requests_per_second:,.0f} r/s, "
                    f"p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)}{errors}")
    return measured


# --- Output -----------------------------------------------------------------------------------------------------


def fmt_ms(ms: float) -> str:
    if math.isnan(ms):
        return "-"
    return f"{ms / 1000:.2g} s" if ms >= 1000 else f"{ms:.3g} ms" if ms < 10 else f"{ms:,.0f} ms"


def fmt_rate_range(values: list[float]) -> str:
    low, high = f"{min(values):,.0f}", f"{max(values):,.0f}"
    return low if low == high else f"{low}{EN_DASH}{high}"


def fmt_ms_range(values: list[float]) -> str:
    low, high = fmt_ms(min(values)), fmt_ms(max(values))
    if low == high:
        return low
    low_n, _, low_unit = low.partition(" ")
    high_n, _, high_unit = high.partition(" ")
    return f"{low_n}{EN_DASH}{high_n} {low_unit}" if low_unit == high_unit else f"{low}{EN_DASH}{high}"


def cell(results: list[WrkResult]) -> str:
    if not results:
        return "-"
    text = (f"{fmt_rate_range([r.requests_per_second for r in results])} "
            f"({fmt_ms_range([r.p99_ms for r in results])})")
    return text + (" ⚠" if any(r.errors for r in results) else "")


def side_by_side(measured: Measurements, works: list[str]) -> str:
    lines = ["| work | project r/s (p99) | baseline r/s (p99) | ratio | p99 ratio |",
             "| --- | --- | --- | --- | --- |"]
    for work in works:
        project, baseline = measured.results(work, "project"), measured.results(work, "baseline")
        ratio = p99_ratio = "-"
        if project and baseline:
            rates = [statistics.mean(r.requests_per_second for r in side) for side in (project, baseline)]
            p99s = [statistics.mean(r.p99_ms for r in side) for side in (project, baseline)]
            ratio, p99_ratio = f"{rates[0] / rates[1]:.2f}", f"{p99s[0] / p99s[1]:.1f}{TIMES}"
        lines.append(f"| {LABELS[work]} | {cell(project)} | {cell(baseline)} | {ratio} | {p99_ratio} |")
    return "\n".join(lines)


def every_run(measured: Measurements) -> str:
    lines = ["| work | server | round | r/s | p50 | p90 | p99 | max | requests | errors | server CPU/request |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in measured.runs:
        r = run.result
        errors = str(r.errors) if not r.errors else (
            f"{r.errors} (non-2xx {r.non_2xx}, socket {sum(r.socket_errors.values())})")
        lines.append(f"| {run.work} | {run.target} | {run.round} | {r.requests_per_second:,.0f} | {fmt_ms(r.p50_ms)} | "
                     f"{fmt_ms(r.percentiles_ms.get(90.0, math.nan))} | {fmt_ms(r.p99_ms)} | "
                     f"{fmt_ms(r.latency_max_ms)} | {r.requests:,} | {errors} | {run.cpu_ms_per_request:.2f} ms |")
    return "\n".join(lines)


# --- Main ------------------------------------------------------------------------------------------------------


def resolve_pg(given: str | None, stack: contextlib.ExitStack) -> str:
    """--pg, else ZLH_BENCH_PG_URL, else what the tests use (tests/services.py: a local or a throwaway server)."""
    if given:
        return given
    if os.environ.get("ZLH_BENCH_PG_URL"):
        return os.environ["ZLH_BENCH_PG_URL"]
    from tests.services import ThrowawayServers, postgres_admin_url

    servers = ThrowawayServers()
    stack.callback(servers.stop)
    return postgres_admin_url(servers)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds per wrk run (default 8)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per work and server (default 2)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per work and server (0: none)")
    parser.add_argument("--pause", type=float, default=1, help="seconds of quiet before each run (default 1)")
    parser.add_argument("--pg", help="a PostgreSQL URL whose server may get throwaway databases (default: "
                                     "ZLH_BENCH_PG_URL, else the tests' choice: 127.0.0.1:5432 or a throwaway server)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"measure only this work (repeatable, or comma-separated): {', '.join(WORKS)}")
    parser.add_argument("--queued", type=int, default=0,
                        help="fill the project's log with this many queued create operations first (e.g. 10000)")
    parser.add_argument("--writers", type=int, default=1,
                        help="customers whose tokens the creates take turns with (default 1: every create of one "
                             "customer, as in issue 13; each customer's creates take turns on its quota)")
    parser.add_argument("--events", type=int, default=200_000, help="events in the rebuild log (default 200,000)")
    parser.add_argument("--rebuild-rounds", type=int, default=1, help="rounds of the rebuild measure (default 1)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="record zlh serve with py-spy (raw collapsed stacks, thread ids) during every project "
                             "run, into DIR/WORK-roundN.txt (pip install py-spy)")
    args = parser.parse_args(argv)
    if args.only:
        args.only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
        unknown = sorted(set(args.only) - set(WORKS))
        if unknown:
            parser.error(f"--only: no work named {', '.join(unknown)}; choose from {', '.join(WORKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    works = [w for w in WORKS if w in (args.only or WORKS)]
    http_works = [w for w in works if w in HTTP_WORKS]
    if http_works:
        try:
            from bench.wrk import wrk_binary

            wrk_binary()
        except WrkError:
            print(f"python -m bench.compare: {INSTALL_HINT}", file=sys.stderr)
            return 2
    sigterm_as_interrupt()
    started = time.monotonic()
    out: list[str] = []
    try:
        with contextlib.ExitStack() as outer:
            admin_url = resolve_pg(args.pg, outer)
            tmp = Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="zlh-bench-compare-")))
            out.append(f"{context_line(admin_url)}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            if http_works:
                with Resources(admin_url) as res:  # servers stopped, databases dropped before the rebuild
                    out += http_section(args, http_works, res, tmp)
                    log("stopping the servers, dropping their databases ...")
            if "rebuild" in works:
                from bench.rebuild import rebuild_benchmark, render

                with Resources(admin_url) as res:
                    head, measures = rebuild_benchmark(res.database("rebuild"), tmp, args.events,
                                                       args.rebuild_rounds)
                out += ["", f"### Rebuild and verify ({args.rebuild_rounds} round(s))", "", render(head, measures)]
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped and every database dropped")
        return 130
    out.append("")
    out.append(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
               f"{time.monotonic() - started:.0f}s in all")
    print("\n".join(out), flush=True)
    return 0


def http_section(args: argparse.Namespace, works: list[str], res: Resources, tmp: Path) -> list[str]:
    lua = tmp / "create.lua"
    lua.write_text(CREATE_LUA)
    server = ProjectServer(res, tmp, args.queued, args.writers)
    project = server.start()
    baseline = BaselineServer(res, tmp, args.writers).start()
    load = Load(args.threads, args.connections, args.duration, lua, args.py_spy)
    measured = measure([project, baseline], works, load, args.rounds, args.warmup, args.pause)
    project.rss.sample()
    baseline.rss.sample()
    queued = f", {args.queued:,} create operations queued in the project's log first" if args.queued else ""
    queued += f", creates by {args.writers} customers" if args.writers > 1 else ""
    lines = [
        "", f"### HTTP: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rounds} round(s) "
        f"interleaved{queued}", "",
        side_by_side(measured, works), "",
        "ratio: mean project r/s over mean baseline r/s; p99 ratio: mean project p99 over mean baseline p99"
        + ("; ⚠: some answers were errors (see every run)." if any(r.result.errors for r in measured.runs) else "."),
        "",
        f"- resident memory of `zlh serve`: {project.rss.describe()}",
        f"- resident memory of the baseline: {baseline.rss.describe()}",
        f"- the project at the end: {server.log_state()}",
        "", "Every run:", "", every_run(measured),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
