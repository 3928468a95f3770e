"""HTTP on one real server: `zlh serve --no-workers` plus a `zlh worker projections` process.

The load generator is asyncio with C tasks, each with its own `httpx.AsyncClient` (one
keep-alive connection), sharing a request counter, so exactly N requests are sent per
measurement, after a warm-up on the same connections. `GET /healthz` is the baseline
(routing + serialisation only); `POST /api/instances` is the API's write path:
the atomic save of operation + instance + name claim, then the read-your-writes wait for
the projections worker (a separate process) to apply it. With `--no-workers` nothing is
provisioned, by design.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stats import Result

ROOT = Path(__file__).resolve().parents[1]
ADMIN_TOKEN = "bench-admin-token"
RYW_TIMEOUT_MARK = "read-your-writes timed out"  # what Container.wait_for_projections logs when it gives up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> tuple[str, float]:
    """(command name, user + system CPU seconds) of a process, from /proc (Linux); NaN elsewhere."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return "", float("nan")


class StartupError(RuntimeError):
    """The server or the worker did not come up; the message carries the tail of its log."""


@dataclass
class Stack:
    """`zlh migrate`, then `zlh serve --no-workers` and `zlh worker projections` as subprocesses."""

    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")},
            "PYTHONPATH": str(ROOT),
            "ZLH_DATABASE_URL": self.database_url,
            "ZLH_DATA_DIR": str(self.workdir / "data"),
            "ZLH_BOOTSTRAP_ADMIN_TOKEN": ADMIN_TOKEN,
            # Lifted for the benchmark: one customer's token behind many connections creating many servers.
            "ZLH_RATE_LIMIT_PER_MINUTE": "1000000000",
            "ZLH_MAX_INSTANCES_PER_USER": "1000000000",
        }

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "api.cli", *args]

    def start(self, timeout: float = 60.0) -> None:
        migrated = subprocess.run(self._cli("migrate"), cwd=self.workdir, env=self.env(),
                                  capture_output=True, text=True, timeout=120)
        if migrated.returncode != 0:
            raise StartupError(f"zlh migrate failed ({migrated.returncode}):\n{migrated.stderr[-3000:]}")
        commands = {
            "serve": self._cli("serve", "--no-workers", "--port", str(self.port)),
            "worker": self._cli("worker", "projections"),
        }
        for name, command in commands.items():
            with open(self.log_path(name), "ab") as log:
                self.procs[name] = subprocess.Popen(command, cwd=self.workdir, env=self.env(),
                                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StartupError(f"zlh serve not ready within {timeout:.0f}s:\n{self.log_tail('serve')}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StartupError(f"zlh {name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def wait_projections_caught_up(self, timeout: float = 60.0) -> None:
        """Poll the admin projections endpoint until every projection has no lag (the worker is live)."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        while True:
            self._check_alive()
            response = httpx.get(f"{self.url}/api/admin/projections", headers=headers, timeout=5)
            response.raise_for_status()
            items = response.json()["items"]
            if items and all(item["lag"] == 0 for item in items):
                return
            if time.monotonic() > deadline:
                raise StartupError(f"projections did not catch up within {timeout:.0f}s: {items}\n"
                                   f"{self.log_tail('worker')}")
            time.sleep(0.1)

    def create_customer(self, email: str) -> str:
        response = httpx.post(f"{self.url}/api/admin/users", json={"email": email},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
        if response.status_code != 201:
            raise StartupError(f"POST /api/admin/users answered {response.status_code}: {response.text}")
        return str(response.json()["token"])

    def ryw_timeouts(self) -> int:
        """How many read-your-writes waits the server has given up on so far."""
        return self.log_tail("serve", chars=10**9).count(RYW_TIMEOUT_MARK)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each subprocess and by this process (`client`)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {"client": usage.ru_utime + usage.ru_stime}
        for name, proc in self.procs.items():
            cpu[name] = _proc_cpu(proc.pid)[1]
        # Every PostgreSQL server process on this machine (the bench is meant to run on an idle box).
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        cpu["postgres"] = sum(t for comm, t in map(_proc_cpu, pids) if comm == "postgres")
        return cpu

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass
class LoadOutcome:
    """One phase of load: latencies of the answered requests, wall time, statuses seen."""

    latencies: list[float]
    seconds: float
    errors: int
    statuses: Counter[int | str]
    first_error: str


async def _load(base_url: str, headers: dict[str, str], concurrency: int, expect: int,
                warmup: tuple[Send, int], measured: tuple[Send, int],
                after_warmup: Callable[[], None] = lambda: None) -> tuple[LoadOutcome, LoadOutcome]:
    """Send the warm-up requests, then the timed ones, from `concurrency` tasks (exact counts)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def phase(clients: list[httpx.AsyncClient], send: Send, n: int) -> LoadOutcome:
        counter = itertools.count()
        latencies: list[float] = []
        statuses: Counter[int | str] = Counter()
        first_error = ""

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal first_error
            while (i := next(counter)) < n:
                t0 = time.perf_counter()
                try:
                    response = await send(client, i)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    first_error = first_error or repr(exc)
                    continue
                latencies.append(time.perf_counter() - t0)
                statuses[response.status_code] += 1
                if response.status_code != expect and not first_error:
                    first_error = f"{response.status_code} {response.text[:300]}"

        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        seconds = time.perf_counter() - start
        errors = sum(count for status, count in statuses.items() if status != expect)
        return LoadOutcome(latencies, seconds, errors, statuses, first_error)

    async with AsyncExitStack() as stack:
        # One client (one keep-alive connection) per task: one shared pool of 32 connections cost
        # the client ~4 ms of CPU per request here (httpcore scans the whole pool on every request).
        clients = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60))
            for _ in range(concurrency)]
        warm = await phase(clients, *warmup)
        after_warmup()
        return warm, await phase(clients, *measured)


def _result(name: str, n: int, outcome: LoadOutcome, note: str) -> Result:
    if outcome.errors:
        note += f"; statuses {dict(outcome.statuses)}; first error: {outcome.first_error}"
    return Result(name, n, outcome.seconds, outcome.latencies, outcome.errors, note)


async def _measure(stack: Stack, token: str, n: int, concurrency: int, warmup: int) -> list[Result]:
    auth = {"Authorization": f"Bearer {token}"}

    async def healthz(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.get("/healthz")

    def create(prefix: str) -> Send:
        async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
            return await client.post(
                "/api/instances",
                json={"kind": "game", "name": f"{prefix}{i}", "template": "minecraft"},
                headers={"Idempotency-Key": f"bench-{prefix}-{i}"},
            )
        return send

    cpu: dict[str, float] = {}
    ryw_before = 0

    def mark() -> None:
        nonlocal ryw_before
        cpu.update(stack.cpu_seconds())
        ryw_before = stack.ryw_timeouts()

    def cpu_note(n: int) -> str:
        now = stack.cpu_seconds()
        return "CPU per request: " + ", ".join(f"{name} {(now[name] - cpu[name]) / n * 1000:.2f} ms"
                                               for name in now)

    _, health = await _load(stack.url, {}, concurrency, 200, (healthz, warmup), (healthz, n),
                            after_warmup=mark)
    health_cpu = cpu_note(n)
    warm, post = await _load(stack.url, auth, concurrency, 202, (create("w"), warmup), (create("b"), n),
                             after_warmup=mark)
    post_cpu = cpu_note(n)
    if warm.errors:
        raise StartupError(f"warm-up POST /api/instances failed: {dict(warm.statuses)} {warm.first_error}")
    ryw = stack.ryw_timeouts() - ryw_before
    results = [
        _result(f"GET /healthz ({concurrency} clients)", n, health, health_cpu),
        _result(f"POST /api/instances ({concurrency} clients)", n, post, post_cpu),
    ]
    if ryw:
        results[1].note += f"; {ryw} read-your-writes waits timed out (5 s) server-side"
    return results


def http_benchmark(database_url: str, workdir: Path, n: int, concurrency: int,
                   log: Callable[[str], None]) -> list[Result]:
    """Start the stack on `database_url`, measure, stop it (always)."""
    stack = Stack(database_url, workdir)
    try:
        log(f"starting zlh serve --no-workers on :{stack.port} and zlh worker projections ...")
        stack.start()
        token = stack.create_customer("bench-customer@x.example")
        stack.wait_projections_caught_up()
        warmup = max(concurrency, min(4 * concurrency, n // 10))
        log(f"HTTP: {warmup} warm-up + {n} requests per endpoint at {concurrency} clients ...")
        return asyncio.run(_measure(stack, token, n, concurrency, warmup))
    finally:
        stack.stop()
