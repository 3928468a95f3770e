"""Live stats of a node's running servers: sampled every few seconds, kept in memory for 15 minutes.

`StatsSampler` runs one daemon thread. Every `interval` seconds (5 by default; `ZLH_AGENT_STATS_INTERVAL`)
it samples each live server of its `LocalDriver`:
- `cpu_percent`: CPU time used since the previous sample over the wall time between them (100 = one
  core), from the instance's cgroup when limits are enforced, else from `/proc` (the server's session);
- `memory_bytes`: the cgroup's `memory.current` / `memory.usage_in_bytes`, else the session's RSS;
- `disk_bytes`: the apparent size of the instance's files (what the disk quota counts);
- `players_online`, `players_max`: for a server whose readiness check is `minecraft`, from a Server
  List Ping (`mcstatus`); null for anything else, or when the ping does not answer.

Samples are not events: they live in a ring buffer per instance (`WINDOW` seconds) and are gone when
the agent restarts. An instance whose server stopped keeps its history until it ages out; `current`
is null while it is not running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from services.agent.driver import LocalDriver

log = logging.getLogger(__name__)

#: How long samples are kept, in seconds.
WINDOW = 15 * 60
DEFAULT_INTERVAL = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class StatsSampler:
    """See the module docstring. `sample_now()` takes one round at once (tests, and a first request)."""

    def __init__(self, driver: LocalDriver, interval: float = DEFAULT_INTERVAL, window: float = WINDOW) -> None:
        self.driver = driver
        self.interval = interval
        self.window = window
        self._history: dict[str, deque[dict[str, Any]]] = {}
        #: instance id -> (cpu ns used, monotonic time) at the previous sample.
        self._cpu: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StatsSampler:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="zlh-agent-stats", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_now()
            except Exception:  # one bad round must not end sampling
                log.exception("agent: sampling stats failed")
            self._stop.wait(self.interval)

    # -- reading ----------------------------------------------------------------------------------

    def history(self, instance_id: UUID | str) -> list[dict[str, Any]]:
        """The instance's samples of the last `window` seconds, oldest first."""
        with self._lock:
            return list(self._history.get(str(instance_id), ()))

    def current(self, instance_id: UUID | str) -> dict[str, Any] | None:
        """The latest sample while the instance's server runs (one is taken now if there is none yet)."""
        key = str(instance_id)
        if key not in self.driver.live_servers():
            return None
        with self._lock:
            samples = self._history.get(key)
            latest = samples[-1] if samples else None
        if latest is None or time.time() - latest["_t"] > 2 * self.interval + 5:
            self.sample_now()
            with self._lock:
                samples = self._history.get(key)
                latest = samples[-1] if samples else None
        return latest

    def all_current(self) -> dict[str, dict[str, Any]]:
        """Instance id -> latest sample, for every running server."""
        live = self.driver.live_servers()
        with self._lock:
            return {k: v[-1] for k, v in self._history.items() if k in live and v}

    # -- sampling ---------------------------------------------------------------------------------

    def sample_now(self) -> None:
        now = time.time()
        for instance_id, pid in self.driver.live_servers().items():
            sample = self._sample(instance_id, pid, now)
            with self._lock:
                ring = self._history.setdefault(instance_id, deque())
                ring.append(sample)
                while ring and now - ring[0]["_t"] > self.window:
                    ring.popleft()
        with self._lock:
            for key in [k for k, ring in self._history.items() if ring and now - ring[-1]["_t"] > self.window]:
                del self._history[key]
                self._cpu.pop(key, None)

    def _sample(self, instance_id: str, pid: int, now: float) -> dict[str, Any]:
        uid = UUID(instance_id)
        group = self.driver.cgroup(uid)
        cpu_ns = memory = None
        if group is not None:
            cpu_ns, memory = group.cpu_usage_ns(), group.memory_bytes()
        if cpu_ns is None or memory is None:
            proc_cpu, proc_rss = _session_usage(pid)
            cpu_ns = proc_cpu if cpu_ns is None else cpu_ns
            memory = proc_rss if memory is None else memory
        mono = time.monotonic()
        with self._lock:
            previous = self._cpu.get(instance_id)
            self._cpu[instance_id] = (cpu_ns, mono)
        cpu_percent = 0.0
        if previous is not None and mono > previous[1] and cpu_ns >= previous[0]:
            cpu_percent = round((cpu_ns - previous[0]) / 1e9 / (mono - previous[1]) * 100, 1)
        online, maximum = self._players(uid)
        return {"cpu_percent": cpu_percent, "memory_bytes": memory, "disk_bytes": self.driver.disk_usage(uid),
                "players_online": online, "players_max": maximum,
                "sampled_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "_t": now}

    def _players(self, instance_id: UUID) -> tuple[int | None, int | None]:
        state = self.driver.server_state(instance_id)
        if state.get("ready", {}).get("check") != "minecraft" or "port" not in state:
            return None, None
        try:
            from mcstatus import JavaServer

            status = JavaServer(self.driver.probe_host(), int(state["port"]), timeout=1.0).status(tries=1)
        except Exception:  # not answering right now (starting, stopping, busy): no figure
            return None, None
        return int(status.players.online), int(status.players.max)


def public(sample: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sample as the API shows it (without the sampler's own bookkeeping)."""
    return None if sample is None else {k: v for k, v in sample.items() if not k.startswith("_")}


def _session_usage(sid: int) -> tuple[int, int]:
    """CPU time (ns) and resident memory (bytes) of every process in session `sid` (a server leads its own)."""
    cpu_ticks = rss_pages = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            # after the name: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12) ... rss(21)
            if int(fields[3]) != sid:
                continue
            cpu_ticks += int(fields[11]) + int(fields[12])
            rss_pages += int(fields[21])
    return cpu_ticks * 1_000_000_000 // CLOCK_TICKS, rss_pages * PAGE_SIZE
