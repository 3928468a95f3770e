"""Kernel limits per instance: memory and CPU through cgroups, or an honest "not enforced".

`detect_cgroups()` looks at what this machine allows, once, when the agent starts:
- **cgroup v2** (`/sys/fs/cgroup/cgroup.controllers` lists `memory` and `cpu`): the agent manages
  `/sys/fs/cgroup/zlh/<instance id>/` (`memory.max`, `memory.swap.max`, `cpu.max`), after enabling
  `+memory +cpu` in the subtree it was delegated (`ZLH_AGENT_CGROUP_ROOT`, default `/sys/fs/cgroup/zlh`);
- **cgroup v1** (a hybrid host, where `memory` and `cpu` are v1 hierarchies, as on this project's
  build machines): `memory/zlh/<id>/` (`memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` where
  swap accounting exists) and `cpu/zlh/<id>/` (`cpu.cfs_quota_us` / `cpu.cfs_period_us`);
- otherwise `None` with the reason (not root, read-only cgroupfs, controllers missing): the agent logs
  it at start-up and `/v1/health` (and so the control plane's `/readyz`) says `not enforced: <reason>`.

Detection does not trust what it reads: it creates a probe cgroup and writes a memory limit into it.

A server joins its cgroup before it runs its own code: the launcher wraps its command in
`sh -c 'echo $$ > …/cgroup.procs && exec "$@"'` (see `ProcessLauncher.spawn_server`), so every child
it forks is counted too. When the kernel kills a process for going over `memory.max`, the cgroup's
OOM-kill counter (`memory.events` `oom_kill` on v2, `memory.oom_control` `oom_kill` on v1) goes up:
`oom_kills()` lets the driver say `out_of_memory` instead of a bare "exited".
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_FS = Path("/sys/fs/cgroup")
#: The CFS period the CPU limit is expressed in (100 ms, the kernel's default).
CPU_PERIOD_US = 100_000
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one instance may use: memory (MiB), CPUs (cores, fractions allowed), disk (bytes of its files)."""

    memory_mb: int
    cpus: float
    disk_bytes: int

    def as_dict(self) -> dict[str, float | int]:
        return {"memory_mb": self.memory_mb, "cpus": self.cpus, "disk_bytes": self.disk_bytes}


class InstanceCgroup:
    """One instance's cgroup(s): the directories to join, the limits, the counters."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        #: controller -> directory (v2: one directory under every key).
        self.dirs = dirs

    def procs_files(self) -> list[Path]:
        """Every `cgroup.procs` a server must join (one on v2, one per hierarchy on v1)."""
        return sorted({d / "cgroup.procs" for d in self.dirs.values()})

    def memory_bytes(self) -> int | None:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return _read_int(self.dirs["memory"] / name)

    def cpu_usage_ns(self) -> int | None:
        """CPU time used by the cgroup's processes so far, in nanoseconds."""
        if self.version == 2:
            stat = _read_keyed(self.dirs["cpu"] / "cpu.stat")
            return None if "usage_usec" not in stat else stat["usage_usec"] * 1000
        acct = self.dirs.get("cpuacct")
        return _read_int(acct / "cpuacct.usage") if acct is not None else None

    def oom_kills(self) -> int:
        """How many processes the kernel killed in this cgroup for going over its memory limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return _read_keyed(self.dirs["memory"] / name).get("oom_kill", 0)

    def remove(self) -> None:
        """Remove the (empty) cgroup directories; a cgroup that still has processes stays."""
        for d in set(self.dirs.values()):
            with contextlib.suppress(OSError):
                d.rmdir()


class Cgroups:
    """A cgroup backend that works on this machine (see the module docstring)."""

    def __init__(self, version: int, roots: dict[str, Path]) -> None:
        self.version = version
        #: controller -> the agent's own directory (`.../zlh`) in that controller's hierarchy.
        self.roots = roots

    def describe(self) -> str:
        where = ", ".join(f"{c}={p}" for c, p in sorted(self.roots.items()))
        return f"cgroup v{self.version} ({where})"

    def for_instance(self, instance_id: str) -> InstanceCgroup:
        return InstanceCgroup(self.version, {c: root / instance_id for c, root in self.roots.items()})

    def apply(self, instance_id: str, limits: Limits) -> InstanceCgroup:
        """Create (or update) the instance's cgroup with `limits`; `OSError` if the kernel refuses."""
        group = self.for_instance(instance_id)
        memory = max(limits.memory_mb, 1) * MIB
        quota = max(int(limits.cpus * CPU_PERIOD_US), 1000)
        for d in set(group.dirs.values()):
            d.mkdir(exist_ok=True)
        if self.version == 2:
            d = group.dirs["memory"]
            (d / "memory.max").write_text(f"{memory}\n")
            with contextlib.suppress(OSError):  # absent without swap accounting
                (d / "memory.swap.max").write_text("0\n")
            (group.dirs["cpu"] / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}\n")
        else:
            d = group.dirs["memory"]
            # memsw must stay >= the memory limit: lower the one that keeps that true first.
            memsw = d / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                current = _read_int(d / "memory.limit_in_bytes") or 0
                order = [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory)]
                for name, value in order if memory <= current else reversed(order):
                    (d / name).write_text(f"{value}\n")
            else:
                (d / "memory.limit_in_bytes").write_text(f"{memory}\n")
            cpu = group.dirs["cpu"]
            (cpu / "cpu.cfs_period_us").write_text(f"{CPU_PERIOD_US}\n")
            (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        return group


def detect_cgroups(root: Path | None = None, fs: Path = CGROUP_FS) -> tuple[Cgroups | None, str]:
    """The backend that works here and how it is described, or `(None, why not)`."""
    if os.geteuid() != 0:
        return None, "the agent does not run as root, so it cannot create cgroups"
    v2_controllers = _read_words(fs / "cgroup.controllers")
    if {"memory", "cpu"} <= v2_controllers:
        base = root or fs / "zlh"
        try:
            _enable(base.parent, {"memory", "cpu"})
            base.mkdir(exist_ok=True)
            _enable(base, {"memory", "cpu"})
            backend = Cgroups(2, {"memory": base, "cpu": base})
            _probe(backend)
        except OSError as exc:
            return None, f"cgroup v2 at {base} cannot be written: {exc.strerror or exc}"
        return backend, backend.describe()
    memory, cpu = fs / "memory", fs / "cpu"
    if (memory / "memory.limit_in_bytes").exists() and (cpu / "cpu.cfs_quota_us").exists():
        roots = {"memory": memory / "zlh", "cpu": cpu / "zlh"}
        if (fs / "cpuacct" / "cpuacct.usage").exists():
            roots["cpuacct"] = fs / "cpuacct" / "zlh"
        try:
            for d in roots.values():
                d.mkdir(exist_ok=True)
            backend = Cgroups(1, roots)
            _probe(backend)
        except OSError as exc:
            return None, f"cgroup v1 memory/cpu hierarchies cannot be written: {exc.strerror or exc}"
        return backend, backend.describe()
    have = ", ".join(sorted(v2_controllers)) or "none"
    return None, f"no cgroup v2 memory and cpu controllers here (v2 has: {have}) and no v1 memory and cpu hierarchies"


def _probe(backend: Cgroups) -> None:
    """Create a cgroup, write a limit into it, remove it: `OSError` if any of that is refused."""
    group = backend.apply(f"probe-{os.getpid()}", Limits(memory_mb=64, cpus=0.5, disk_bytes=0))
    group.remove()


def _enable(directory: Path, controllers: set[str]) -> None:
    control = directory / "cgroup.subtree_control"
    missing = controllers - _read_words(control)
    if missing:
        control.write_text(" ".join(f"+{c}" for c in sorted(missing)) + "\n")


def _read_words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_keyed(path: Path) -> dict[str, int]:
    """`key value` lines (`memory.events`, `cpu.stat`, `memory.oom_control`) as a dict of ints."""
    out: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out
