"""Child processes and throwaway databases for the benchmarks, cleaned up whatever happens.

Every child runs in its own session (so a Ctrl-C in the terminal reaches only the harness, which then
stops the children in order); `stop_process` sends SIGTERM, waits, then SIGKILLs the child's whole
process group. `Resources` is a context manager that undoes what was registered on it, last first,
on success, on error and on KeyboardInterrupt; `sigterm_as_interrupt` makes SIGTERM and SIGHUP
unwind the same way.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from bench.run import log, with_dbname
from services.infrastructure.database import DatabaseURL

ROOT = Path(__file__).resolve().parents[1]


def sigterm_as_interrupt() -> None:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, so every `finally` runs.

    SIGINT too, because a shell starts a background job with SIGINT ignored, and Python keeps it so.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def project_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any `ZLH_*`, plus the project on PYTHONPATH and the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}
    env["PYTHONPATH"] = str(ROOT)
    env["ZLH_DATABASE_URL"] = database_url
    env["ZLH_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def start_process(command: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop_process(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL the process group (the child and anything it left)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f}s: SIGKILL")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_child(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str, str, float]:
    """Run to completion in its own session; (exit code, stdout, stderr, wall seconds). Killed if interrupted."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, out, err, time.perf_counter() - started


class Resources(contextlib.ExitStack):
    """An ExitStack that makes throwaway databases (named `zlh_bench_<run>_<what>`) and drops them on exit."""

    def __init__(self, admin_url: str) -> None:
        super().__init__()
        self.admin_url = admin_url
        self.run = secrets.token_hex(4)

    def database(self, what: str) -> str:
        """Create an empty database; return its URL. It is dropped (WITH FORCE) when the stack unwinds."""
        name = f"zlh_bench_{self.run}_{what}"
        conninfo = DatabaseURL.parse(self.admin_url).conninfo()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                log(f"could not drop database {name}: {exc}")

        self.callback(drop)
        return with_dbname(self.admin_url, name)

    def process(self, command: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        proc = start_process(command, log_path, env, cwd)
        self.callback(stop_process, proc)
        return proc

    def __exit__(self, *exc: Any) -> bool:
        """Unwind with SIGINT ignored, so a second Ctrl-C cannot leave a process or a database behind."""
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            return bool(super().__exit__(*exc))
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


class RssSampler(threading.Thread):
    """Samples a process's resident memory (`VmRSS` in /proc/PID/status) every `every` seconds; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(name=f"rss-{pid}", daemon=True)
        self.pid, self.every = pid, every
        self.peak_kib = 0
        self.hwm_kib = 0  # the kernel's own peak (VmHWM), read at each sample
        self._stop_event = threading.Event()

    def _read(self) -> dict[str, int]:
        values = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0])
        return values

    def sample(self) -> None:
        values = self._read()
        self.peak_kib = max(self.peak_kib, values.get("VmRSS", 0))
        self.hwm_kib = max(self.hwm_kib, values.get("VmHWM", 0))

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self._stop_event.set()

    def describe(self) -> str:
        return f"peak {self.peak_kib / 1024:,.0f} MiB (VmRSS sampled every {self.every:g} s; " \
               f"kernel VmHWM {self.hwm_kib / 1024:,.0f} MiB)"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2,
               alive: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        alive()
        if predicate():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s")
        time.sleep(every)
