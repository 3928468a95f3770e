"""Processes on a node: the one place the agent starts one, and how it knows and stops its servers again.

`ProcessLauncher` is the only code in the agent that spawns a process:
- `run_step` runs one install step (as the agent's user, into the node's install cache, with the
  agent's environment minus its `ZLH_*` settings, so the machine's npm and pip configuration apply);
- `spawn_server` starts an instance's server in its own session (it outlives the agent), with a clean
  environment (no agent secret), stdin from the console FIFO and stdout/stderr to the console log.
Kernel limits and per-instance users plug in here (a subclass given to `LocalDriver`): `spawn_server`
gets the `InstanceSpec`, whose template definition carries the default resources.

A server is known again by a `ProcessRecord` (pid and the kernel's start time of that pid), so a
stale pid file whose pid was reused by another process is never taken for the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.agent.limits import InstanceCgroup
from services.ports import DriverError, InstanceSpec

#: Environment a server starts with before its template's `start.env` (nothing of the agent's own).
SERVER_BASE_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
#: How often stop and wait loops look again, in seconds.
POLL = 0.02


class ProcessLauncher:
    """Starts install steps and servers; see the module docstring. Subclass to add limits or users."""

    def install_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment of an install step: the agent's, without its `ZLH_*` settings, plus `extra`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}
        return {**env, **extra}

    def server_env(self, spec: InstanceSpec, home: Path, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment of a server: PATH, locale, HOME, then the template's `start.env`."""
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home),
                **SERVER_BASE_ENV, **extra}

    def run_step(self, argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float, log: IO[bytes]) -> int:
        """Run one install step to its end; its output goes to `log`. Returns the exit status.

        `DriverError("install_failed")` if it cannot start or outlives `timeout` (its process group is killed).
        """
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, umask=0o022)
        except OSError as exc:
            raise DriverError("install_failed", f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise DriverError("install_failed", f"{argv[0]} did not finish within {timeout:.0f}s") from None

    def spawn_server(self, spec: InstanceSpec, argv: list[str], *, cwd: Path, env: Mapping[str, str], stdin: int,
                     stdout: int, cgroup: InstanceCgroup | None = None,
                     user: tuple[int, int] | None = None) -> subprocess.Popen[bytes]:
        """Start the server in its own session; `DriverError("spawn_failed")` if it cannot be started.

        With a `cgroup`, the server joins it before its own code runs (see `join_cgroup`); with a `user`
        (uid, gid), it then drops to that user (see `as_user`).
        """
        if user is not None:
            argv = as_user(user, argv)
        if cgroup is not None:
            argv = join_cgroup(cgroup, argv)
        try:
            return subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=stdin, stdout=stdout, stderr=stdout,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise DriverError("spawn_failed", f"cannot start {argv[0]}: {exc.strerror or exc}") from exc


def as_user(user: tuple[int, int], argv: list[str]) -> list[str]:
    """`argv` run by `setpriv` as `user` (uid, gid), without supplementary groups or new privileges."""
    uid, gid = user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs", "--", *argv]


def join_cgroup(cgroup: InstanceCgroup, argv: list[str]) -> list[str]:
    """`argv` wrapped so that the process writes its pid into every `cgroup.procs` of `cgroup`, then execs.

    The same pid runs the server (`exec`), so the pid file and the kernel's start time stay right, and
    every process it forks is in the cgroup from its first instruction.
    """
    procs = [str(p) for p in cgroup.procs_files()]
    joins = " && ".join(f'echo $$ > "${i + 1}"' for i in range(len(procs)))
    script = f'{joins} && shift {len(procs)} && exec "$@"'
    return ["/bin/sh", "-c", script, "zlh-cgroup-join", *procs, *argv]


@dataclass(frozen=True)
class ProcessRecord:
    """A server process as the agent recorded it: its pid and the kernel's start time of that pid."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> ProcessRecord | None:
        started = start_time(pid)
        return None if started is None else cls(pid, started)

    @classmethod
    def parse(cls, text: str) -> ProcessRecord | None:
        parts = text.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]))

    def dump(self) -> str:
        return f"{self.pid} {self.started}\n"

    def alive(self) -> bool:
        """The very process recorded is still running (not a zombie, not a new process with the same pid)."""
        return alive(self.pid) and start_time(self.pid) == self.started


def start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of stat(5), counted after the command name
    except (IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[:1]
    except OSError:
        return False
    return state not in (["Z"], ["X"])


def wait_dead(record: ProcessRecord, timeout: float) -> bool:
    """Poll until the recorded process is gone; return whether it is."""
    deadline = time.monotonic() + timeout
    while record.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def signal_group(record: ProcessRecord, sig: int) -> None:
    """Send `sig` to the server's process group (it leads its own session); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)
