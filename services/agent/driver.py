"""`LocalDriver`: the `InstanceDriver` that runs instances' real servers as processes on this machine.

The node agent (`services.agent.server`) serves it; nothing here knows a particular template:
what to install, how to start, stop and probe a server comes with the `InstanceSpec`
(`definition`, the template, and `variables`), rendered here with the node's built-ins
(`domain.templates`).

Layout under `data_dir`:
- `instances/<id>/`: the instance's files, the customer-visible root (`${files}`: console,
  file browser and backups see exactly this tree);
- `runtime/<id>/`: out of the customer's reach (`${runtime}`): `port` (the allocated port),
  `server.pid` (pid and its start time), `server.json` (what the running server was started
  with: port, stop command, readiness check; mode 0600), `console.log` (the server's stdout
  and stderr), `console.in` (a FIFO, the server's stdin), `home/` (`${home}`);
- `backups/<backup_id>.tar.gz`: see `services.agent.backups`;
- the install cache (`cache_dir`, default `data_dir/cache`): see `services.agent.installs`.

Servers run in their own session (`start_new_session`), so they outlive a restart or crash of
the agent; the driver finds them again through `server.pid`, trusting it only while that pid
still has the recorded start time. Stop is graceful: the template's stop command on the
console, then SIGTERM to the server's process group, then SIGKILL. Per-instance process,
delete and restore steps are serialized with an `flock` on the runtime directory; port
allocation with one on `runtime/`. Every process is started by the `ProcessLauncher`, and
every file written into an instance's files (config files included) goes through
`write_file`: the seams for limits, per-instance users and quotas.

Limits (`services.agent.limits`): each instance's memory and CPU are enforced by the kernel through
the cgroup the server joins before it runs (when this machine lets the agent write cgroups; else
`limits_status` says why not, and the health check shows it). What an instance may use comes with its
start (`set_limits`, from the control plane: the template's resources and the disk quota) and is kept
in `runtime/<id>/limits.json`. Its disk quota is enforced on every write of the agent into its files:
a write that would bring them over it is `quota_exceeded` and writes nothing. File writes and a
restore's swap of one instance are serialized by a second per-instance `flock`
(`runtime/<id>/files.lock`), so a write acknowledged before a restore is replaced by it, and one asked
for during a restore waits and lands in the restored tree: none is lost silently. When a server exits,
`runtime/<id>/exit.json` records why (`out_of_memory` when the kernel killed it in its cgroup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.templates import Ready, Template, TemplateError, Value
from services.agent import backups, files, offsite, readiness
from services.agent.installs import Installer
from services.agent.limits import MIB, Cgroups, InstanceCgroup, Limits, detect_cgroups
from services.agent.processes import ProcessLauncher, ProcessRecord, signal_group, wait_dead
from services.agent.stats import StatsSampler, public
from services.agent.users import InstanceUsers
from services.infrastructure.files import atomic_write_text, file_lock
from services.ports import DriverError, InstanceSpec, spec_address

log = logging.getLogger(__name__)

PORT_FILE = "port"
PID_FILE = "server.pid"
STATE_FILE = "server.json"
CONSOLE_LOG = "console.log"
CONSOLE_IN = "console.in"
HOME_DIR = "home"
LIMITS_FILE = "limits.json"
EXIT_FILE = "exit.json"
FILES_LOCK = "files.lock"
#: The disk quota of an instance whose limits the control plane has not sent (`ZLH_INSTANCE_DISK_QUOTA`).
DEFAULT_DISK_QUOTA = 10 * 1024 * MIB
#: Passed as `cgroups` to look at what this machine allows (the default).
DETECT = "detect"
POLL_INTERVAL = 0.1
#: How long SIGKILL may take before a stop gives up.
KILL_GRACE = 5.0


class LocalDriver:
    """Instances as local server processes. See the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        max_write_bytes: int = files.MAX_WRITE_BYTES,
        cache_dir: Path | str | None = None,
        launcher: ProcessLauncher | None = None,
        bind: str | None = None,
        disk_quota: int = DEFAULT_DISK_QUOTA,
        cgroups: Cgroups | str | None = DETECT,
        users: InstanceUsers | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        #: The address servers listen on (default: `host`).
        self.bind = bind or host
        self.max_write_bytes = max_write_bytes
        self.instances_dir = self.data_dir / "instances"
        self.runtime_root = self.data_dir / "runtime"
        self.backups_dir = self.data_dir / "backups"
        self.launcher = launcher or ProcessLauncher()
        self.installer = Installer(Path(cache_dir) if cache_dir else self.data_dir / "cache", self.launcher)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()
        self.disk_quota = disk_quota
        #: Live stats of the running servers (started by the agent app): see `services.agent.stats`.
        self.sampler = StatsSampler(self)
        #: Per-instance Unix users (when the agent runs as root): see `services.agent.users`.
        self.users = users or InstanceUsers(reachable=(self.data_dir, self.installer.cache_root))
        #: Instances being stopped on purpose (their exit is `stopped`, not a crash).
        self._stopping: set[str] = set()
        if cgroups == DETECT:
            self.cgroups, reason = detect_cgroups()
        else:
            self.cgroups, reason = cgroups, "given" if cgroups is not None else "disabled for this driver"
        #: `enforced: <backend>` or `not enforced: <reason>`, for the log and the health check.
        self.limits_status = f"enforced: {reason}" if isinstance(self.cgroups, Cgroups) else f"not enforced: {reason}"

    # -- paths and helpers ----------------------------------------------------------------------

    def instance_dir(self, spec: InstanceSpec | UUID) -> Path:
        """`DATA_DIR/instances/<id>`: the instance's files (the customer-visible root)."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return self.instances_dir / str(instance_id)

    def runtime_dir(self, spec: InstanceSpec | UUID) -> Path:
        """`DATA_DIR/runtime/<id>`: port, pid file, server state, console log and FIFO, home."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return self.runtime_root / str(instance_id)

    def console_log_path(self, spec: InstanceSpec | UUID) -> Path:
        """Where the server's stdout and stderr go."""
        return self.runtime_dir(spec) / CONSOLE_LOG

    @contextlib.contextmanager
    def _instance_lock(self, spec: InstanceSpec) -> Iterator[Path]:
        """Serialize process, delete and restore steps of one instance; yields the runtime dir.

        The lock is an `flock` on the runtime directory itself; if `remove_directory` deleted
        that directory while we waited, we lock the new one instead.
        """
        d = self.runtime_dir(spec)
        while True:
            try:
                d.mkdir(parents=True, exist_ok=True)
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as exc:
                raise DriverError("io_error", f"runtime directory {d}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(d).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield d
                    return
            finally:
                os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _files_lock(self, spec: InstanceSpec | UUID) -> Iterator[None]:
        """Serialize writes into an instance's files with a restore's swap (`runtime/<id>/files.lock`)."""
        path = self.runtime_dir(spec) / FILES_LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError as exc:
            raise DriverError("not_found", "the instance has no files directory") from exc
        except OSError as exc:
            raise DriverError("io_error", f"files lock {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- limits -----------------------------------------------------------------------------------

    def set_limits(self, spec: InstanceSpec, limits: dict[str, Any] | None) -> Limits:
        """Record what the instance may use (`{"memory_mb", "cpus", "disk_bytes"}` from the control plane;
        missing keys from the template's resources); return the limits in force."""
        current = self.limits(spec)
        given = limits or {}
        chosen = Limits(memory_mb=int(given.get("memory_mb") or current.memory_mb),
                        cpus=float(given.get("cpus") or current.cpus),
                        disk_bytes=int(given.get("disk_bytes") or current.disk_bytes))
        rt = self.runtime_dir(spec)
        try:
            rt.mkdir(parents=True, exist_ok=True)
            atomic_write_text(rt / LIMITS_FILE, json.dumps(chosen.as_dict()))
        except OSError as exc:
            raise DriverError("io_error", f"recording the limits of {spec.instance_id}: {exc}") from exc
        return chosen

    def limits(self, spec: InstanceSpec | UUID) -> Limits:
        """The limits recorded for the instance; else its template's resources (disk at most the node's
        quota); else the node's disk quota and no memory or CPU figure (0)."""
        try:
            data = json.loads((self.runtime_dir(spec) / LIMITS_FILE).read_text())
            return Limits(int(data["memory_mb"]), float(data["cpus"]), int(data["disk_bytes"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        definition = spec.definition if isinstance(spec, InstanceSpec) else None
        if definition is not None:
            r = definition.resources
            return Limits(r.memory_mb, r.cpus, min(r.disk_mb * MIB, self.disk_quota))
        return Limits(0, 0.0, self.disk_quota)

    def cgroup(self, spec: InstanceSpec | UUID) -> InstanceCgroup | None:
        """The instance's cgroup, when limits are enforced here."""
        if self.cgroups is None:
            return None
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return self.cgroups.for_instance(str(instance_id))

    def disk_usage(self, spec: InstanceSpec | UUID) -> int:
        """Bytes the instance's files take (the apparent size of its regular files)."""
        return files.disk_usage(self.instance_dir(spec))

    def last_exit(self, spec: InstanceSpec | UUID) -> dict[str, Any] | None:
        """How the instance's server last ended: `{"reason", "status", "at", "detail"}`, or None."""
        try:
            data = json.loads((self.runtime_dir(spec) / EXIT_FILE).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def public_host(self, spec: InstanceSpec) -> str:
        return self.host

    def address(self, spec: InstanceSpec, port: int) -> str:
        return spec_address(spec, self.host, port)

    def _values(self, spec: InstanceSpec, port: int, cache: Path) -> dict[str, Value]:
        """The template's variables and every built-in, for rendering what the server runs."""
        rt = self.runtime_dir(spec)
        return {
            **spec.variables, "port": port, "instance_id": str(spec.instance_id), "host": self.host,
            "bind": self.bind, "files": str(self.instance_dir(spec)), "home": str(rt / HOME_DIR),
            "runtime": str(rt), "cache": str(cache), "downloads": str(self.installer.downloads),
            "system_python": self.installer.python,
        }

    # -- InstanceDriver: provisioning -------------------------------------------------------------

    def allocate_port(self, spec: InstanceSpec) -> int:
        """Pick a free port (bind to port 0), record it in `runtime/<id>/port`; idempotent."""
        try:
            self.runtime_root.mkdir(parents=True, exist_ok=True)
            with file_lock(self.runtime_root):
                port_file = self.runtime_dir(spec) / PORT_FILE
                existing = _read_int(port_file)
                if existing is not None:
                    return existing
                taken = {p for f in self.runtime_root.glob(f"*/{PORT_FILE}") if (p := _read_int(f)) is not None}
                for _ in range(100):
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                        s.bind((self.bind, 0))
                        port = int(s.getsockname()[1])
                    if port not in taken:
                        break
                else:
                    raise DriverError("no_free_port", f"no free port on {self.bind}")
                port_file.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(port_file, f"{port}\n")
                return port
        except OSError as exc:
            raise DriverError("io_error", f"allocating a port: {exc}") from exc

    def create_directory(self, spec: InstanceSpec) -> str:
        """Create `instances/<id>/` and `runtime/<id>/` (idempotent); return the files directory."""
        d = self.instance_dir(spec)
        try:
            d.mkdir(parents=True, exist_ok=True)
            self.runtime_dir(spec).mkdir(parents=True, exist_ok=True)
            owner = self.users.ensure(spec.instance_id)
            if owner is not None:
                os.chmod(self.instances_dir, 0o711)  # others may pass through, not list
                self.users.give(owner, d, mode=0o700)
        except OSError as exc:
            raise DriverError("io_error", f"creating {d}: {exc}") from exc
        return str(d)

    def install(self, spec: InstanceSpec) -> dict[str, Any]:
        """Run the template's install steps into the node's cache, unless they ran already (see `Installer`)."""
        definition = _definition(spec)
        return self.installer.install(definition, spec.variables)

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        """Render the config files and start the server on `port`, or return the pid already running there.

        A server of this instance running on another port is stopped and replaced.
        """
        definition = _definition(spec)
        with self._instance_lock(spec) as rt:
            record = self._server(spec)
            if record is not None:
                if self._state(spec).get("port") == port:
                    return record.pid
                self._stop_unlocked(spec, record, timeout=10.0)
            cache = self.installer.installed(definition, spec.variables)
            if cache is None:
                raise DriverError("not_installed", f"template {definition.name} is not installed on this node yet")
            values = self._values(spec, port, cache)
            try:
                start = definition.render_start(values)
                stop = definition.render_stop(values)
                ready = definition.render_ready(values)
                configs = definition.render_files(values)
            except TemplateError as exc:
                raise DriverError("template_error", exc.message) from exc
            files_dir = self.instance_dir(spec)
            try:
                files_dir.mkdir(parents=True, exist_ok=True)
                (rt / HOME_DIR).mkdir(exist_ok=True)
                owner = self.users.ensure(spec.instance_id)
                if owner is not None and files_dir.stat().st_uid != owner[0]:  # made before users were separated
                    self.users.give_tree(owner, files_dir)
                self.users.give(owner, files_dir, rt / HOME_DIR, mode=0o700)
            except OSError as exc:
                raise DriverError("io_error", f"creating {files_dir}: {exc}") from exc
            with self._files_lock(spec):
                for config in configs:
                    if config.when == "always" or not _exists_inside(files_dir, config.path):
                        files.write_file(files_dir, config.path, config.content.encode(), self.max_write_bytes)
                        self._give_written(spec, config.path)
            state: dict[str, Any] = {"port": port, "template": definition.name, "stop": dataclasses.asdict(stop),
                                     "ready": dataclasses.asdict(ready)}
            group = self._apply_limits(spec, state)
            with contextlib.suppress(OSError):
                (rt / EXIT_FILE).unlink()
            self._stopping.discard(str(spec.instance_id))
            return self._spawn(spec, rt, port, start.command, start.env, Path(start.cwd), state, group, owner)

    def _apply_limits(self, spec: InstanceSpec, state: dict[str, Any]) -> InstanceCgroup | None:
        """Put the instance's memory and CPU limits in its cgroup (when enforced here); note them in `state`."""
        limits = self.limits(spec)
        state["limits"] = limits.as_dict()
        if self.cgroups is None or limits.memory_mb <= 0:
            return None
        try:
            group = self.cgroups.apply(str(spec.instance_id), limits)
        except OSError as exc:
            raise DriverError("limits_failed", f"cannot set the kernel limits of {spec.instance_id}: {exc}") from exc
        state["oom_kills"] = group.oom_kills()
        return group

    def _spawn(self, spec: InstanceSpec, rt: Path, port: int, argv: tuple[str, ...], env: dict[str, str],
               cwd: Path, state: dict[str, Any], group: InstanceCgroup | None = None,
               owner: tuple[int, int] | None = None) -> int:
        console_log = rt / CONSOLE_LOG
        try:
            stdin = _open_fifo(rt / CONSOLE_IN)
        except OSError as exc:
            raise DriverError("io_error", f"console FIFO of {spec.instance_id}: {exc}") from exc
        try:
            out = os.open(console_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            os.close(stdin)
            raise DriverError("io_error", f"console log of {spec.instance_id}: {exc}") from exc
        try:
            state["console_offset"] = os.fstat(out).st_size
            server_env = self.launcher.server_env(spec, rt / HOME_DIR, env)
            extra: dict[str, Any] = {"cgroup": group} if group is not None else {}
            if owner is not None:
                extra["user"] = owner
            proc = self.launcher.spawn_server(spec, list(argv), cwd=cwd, env=server_env, stdin=stdin, stdout=out,
                                              **extra)
        finally:
            os.close(stdin)
            os.close(out)
        with self._children_lock:
            self._children[proc.pid] = proc
        # Reap the child whenever it exits, so no zombies accumulate.
        threading.Thread(target=self._reap, args=(proc, spec.instance_id), name=f"zlh-reap-{proc.pid}",
                         daemon=True).start()
        record = ProcessRecord.of(proc.pid)
        if record is None:  # gone already (and maybe reaped): a server that exits at once, like a bad jar
            raise DriverError("process_exited", f"the {spec.kind} server of {spec.instance_id} exited at once; the "
                                                f"end of its console:\n{self._log_tail(spec)}")
        try:
            _write_private(rt / STATE_FILE, json.dumps(state))
            atomic_write_text(rt / PID_FILE, record.dump())
        except OSError as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise DriverError("spawn_failed", f"cannot record the server of {spec.instance_id}: {exc}") from exc
        return proc.pid

    def _reap(self, proc: subprocess.Popen[bytes], instance_id: UUID | None = None) -> None:
        status = proc.wait()
        with self._children_lock:
            self._children.pop(proc.pid, None)
        if instance_id is not None and str(instance_id) not in self._stopping:
            self._record_exit(instance_id, status)

    def _record_exit(self, instance_id: UUID, status: int | None, reason: str | None = None) -> dict[str, Any]:
        """Write `exit.json`: why the server ended (`out_of_memory`, `stopped`, `killed`, `exited`)."""
        detail = ""
        if reason is None:
            reason, detail = self._exit_reason(instance_id, status)
        record = {"reason": reason, "status": status, "detail": detail,
                  "at": backups.rfc3339(time.time())}
        with contextlib.suppress(OSError):
            atomic_write_text(self.runtime_dir(instance_id) / EXIT_FILE, json.dumps(record))
        if reason == "out_of_memory":
            log.warning("agent: the server of %s was killed by the kernel: %s", instance_id, detail)
        return record

    def _exit_reason(self, instance_id: UUID, status: int | None) -> tuple[str, str]:
        group = self.cgroup(instance_id)
        spec_state = self._state(instance_id)
        before = int(spec_state.get("oom_kills", 0))
        if group is not None and group.oom_kills() > before:
            memory = int(spec_state.get("limits", {}).get("memory_mb", 0))
            return "out_of_memory", (f"the kernel killed the server: it went over its memory limit of {memory} MiB")
        if status is not None and status < 0:
            return "killed", f"the server was ended by signal {-status}"
        return "exited", f"the server exited with status {status}"

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        """Poll the template's readiness check on `port` until it passes; `process_exited` as soon as the
        server is gone (with the end of its console), `not_connectable` after `timeout` s."""
        deadline = time.monotonic() + timeout
        state = self._state(spec)
        ready = Ready(**state["ready"]) if "ready" in state else Ready("minecraft" if spec.kind == "game" else "http")
        probe_host = "127.0.0.1" if self.bind in ("0.0.0.0", "") else "::1" if self.bind == "::" else self.bind
        last_error = "no attempt"
        while True:
            if self._server(spec) is None:
                reason, detail = self._exit_reason(spec.instance_id, None)
                if reason == "out_of_memory":
                    raise DriverError("out_of_memory", detail)
                raise DriverError("process_exited", f"the {spec.template} server of {spec.instance_id} is not "
                                  f"running; the end of its console:\n{self._log_tail(spec)}")
            remaining = deadline - time.monotonic()
            try:
                readiness.probe(ready, probe_host, port, max(0.2, min(2.0, remaining)), self.console_log_path(spec),
                                int(state.get("console_offset", 0)))
            except OSError as exc:
                last_error = str(exc) or type(exc).__name__
            else:
                if self._server(spec) is not None:  # it was our server that answered, not another process
                    return
                continue
            if time.monotonic() + POLL_INTERVAL >= deadline:
                raise DriverError("not_connectable", f"the {spec.template} server on {probe_host}:{port} did not "
                                  f"pass its {ready.check} check within {timeout}s: {last_error}")
            time.sleep(POLL_INTERVAL)  # polling interval, bounded by the deadline

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        """The server's process is alive and `port` accepts TCP connections."""
        if self._server(spec) is None:
            return False
        try:
            with socket.create_connection((self.host, port), timeout=1.0):
                return True
        except OSError:
            return False

    # -- InstanceDriver: lifecycle ----------------------------------------------------------------

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        """Stop the server: its stop command, then SIGTERM, then SIGKILL. Idempotent."""
        with self._instance_lock(spec) as rt:
            record = self._server(spec)
            if record is not None:
                self._stopping.add(str(spec.instance_id))  # until the next start: its reaper records nothing
                self._stop_unlocked(spec, record, timeout)
                self._record_exit(spec.instance_id, None, "stopped")
            with contextlib.suppress(OSError):
                (rt / PID_FILE).unlink()

    def _stop_unlocked(self, spec: InstanceSpec, record: ProcessRecord, timeout: float) -> None:
        stop = self._state(spec).get("stop", {})
        grace = max(timeout, float(stop.get("timeout", 0)))
        if stop.get("command"):
            with contextlib.suppress(DriverError):
                self._write_fifo(spec, str(stop["command"]))
            if wait_dead(record, grace):
                signal_group(record, signal.SIGKILL)  # whatever it left behind in its group
                return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_GRACE)):
            signal_group(record, sig)
            if wait_dead(record, wait):
                signal_group(record, signal.SIGKILL)
                return
        raise DriverError("stop_failed", f"the server {record.pid} of {spec.instance_id} survived SIGKILL")

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Delete `instances/<id>/` and `runtime/<id>/` (port reservation included); idempotent.

        `still_running` while the server runs.
        """
        files_dir, rt = self.instance_dir(spec), self.runtime_dir(spec)
        if not files_dir.exists() and not rt.exists():
            return
        with self._instance_lock(spec):
            if self._server(spec) is not None:
                raise DriverError("still_running", f"instance {spec.instance_id} is still running")
            for d in (files_dir, rt):  # the runtime dir last: it holds the lock (rmtree keeps our fd valid)
                try:
                    shutil.rmtree(d)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise DriverError("io_error", f"removing {d}: {exc}") from exc
            group = self.cgroup(spec)
            if group is not None:
                group.remove()
            self.users.remove(spec.instance_id)

    # -- InstanceDriver: console and files --------------------------------------------------------

    def send_console(self, spec: InstanceSpec, line: str) -> None:
        """Send one command line to the server's stdin (the console FIFO)."""
        if "\n" in line or "\r" in line:
            raise DriverError("bad_command", "a console command is a single line")
        if self._server(spec) is None:
            raise DriverError("not_running", f"instance {spec.instance_id} is not running")
        self._write_fifo(spec, line)

    def _write_fifo(self, spec: InstanceSpec, line: str) -> None:
        data = (line + "\n").encode()
        if len(data) > 4096:  # PIPE_BUF: longer writes are not atomic
            raise DriverError("bad_command", "console command too long")
        path = self.runtime_dir(spec) / CONSOLE_IN
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise DriverError("not_running", f"instance {spec.instance_id} is not running") from exc
            raise DriverError("io_error", f"console of {spec.instance_id}: {exc}") from exc
        try:
            os.write(fd, data)
        except BlockingIOError as exc:
            raise DriverError("console_busy", f"console of {spec.instance_id} is not reading") from exc
        except OSError as exc:
            raise DriverError("io_error", f"console of {spec.instance_id}: {exc}") from exc
        finally:
            os.close(fd)

    def console_log(self, spec: InstanceSpec | UUID, lines: int | None = None) -> str:
        """The server's console output so far (its last `lines` lines), '' if none."""
        try:
            text = self.console_log_path(spec).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if lines is None:
            return text
        return "".join(line + "\n" for line in text.splitlines()[-lines:])

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        """`[{"name", "type", "size"}]` of a directory under `instances/<id>/`."""
        return files.list_dir(self.instance_dir(spec), path)

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        """The bytes of a file under `instances/<id>/`."""
        return files.read_file(self.instance_dir(spec), path)

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        """Atomically write a file under `instances/<id>/`; `too_large` above `max_write_bytes`,
        `quota_exceeded` when the files would then take more than the instance's disk quota.

        Serialized with a restore's swap (the files lock): the write lands either before the swap (and the
        restore replaces it) or after it (in the restored tree).
        """
        if len(content) > self.max_write_bytes:
            raise DriverError("too_large", f"a file may hold at most {self.max_write_bytes} bytes, got {len(content)}")
        root = self.instance_dir(spec)
        with self._files_lock(spec):
            quota = self.limits(spec).disk_bytes
            used = files.disk_usage(root)
            replaced = files.existing_size(root, path)
            after = used - replaced + len(content)
            if after > quota:
                raise DriverError("quota_exceeded", f"writing {len(content)} bytes would bring the server's files to "
                                  f"{after} bytes, over its disk quota of {quota} bytes ({used} in use)")
            files.write_file(root, path, content, self.max_write_bytes)
            self._give_written(spec, path)

    def _give_written(self, spec: InstanceSpec, path: str) -> None:
        """Give a file the agent wrote, and the directories it made for it, to the instance's user."""
        owner = self.users.ensure(spec.instance_id) if self.users.enabled else None
        if owner is None:
            return
        root = self.instance_dir(spec)
        parts = files.normalize(path)
        for i in range(1, len(parts) + 1):
            try:
                target = files.resolve_inside(root, "/".join(parts[:i]))
            except DriverError:
                return
            self.users.give(owner, target)

    # Like writes, these hold the files lock (a restore's swap never interleaves) and leave what they make
    # owned by the instance's user.

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        """Create a directory (and missing parents) under `instances/<id>/`."""
        with self._files_lock(spec):
            files.make_directory(self.instance_dir(spec), path)
            self._give_written(spec, path)

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        """Remove a file (or an empty directory, with `directory`) under `instances/<id>/`."""
        with self._files_lock(spec):
            files.delete_path(self.instance_dir(spec), path, directory)

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        """Move an entry to another path under `instances/<id>/`."""
        with self._files_lock(spec):
            files.rename_path(self.instance_dir(spec), source, target, overwrite)

    # -- InstanceDriver: backups ------------------------------------------------------------------

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict[str, Any]:
        """Archive `instances/<id>/` to `backups/<backup_id>.tar.gz` (idempotent); return the manifest."""
        return backups.create_backup(self.instance_dir(spec), self.backups_dir, backup_id)

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        """Verify and swap in the archive's files; `still_running` while the server runs."""
        with self._instance_lock(spec):
            if self._server(spec) is not None:
                raise DriverError("still_running", f"instance {spec.instance_id} must be stopped to restore")
            owner = self.users.ensure(spec.instance_id) if self.users.enabled else None

            def prepare(extracted: Path) -> None:
                if owner is not None:
                    self.users.give_tree(owner, extracted)
                    os.chmod(extracted, 0o700)

            with self._files_lock(spec):
                backups.restore_backup(self.instance_dir(spec), self.backups_dir, backup_id, sha256, prepare)

    def delete_backup(self, backup_id: UUID) -> None:
        """Remove `backups/<backup_id>.tar.gz`; idempotent."""
        backups.delete_backup(self.backups_dir, backup_id)

    # -- moving a server between nodes: its archive leaves one node and arrives on another --------------

    def fetch_backup(self, backup_id: UUID) -> bytes:
        """The archive's bytes (`not_found` if there is none)."""
        path = backups.archive_path(self.backups_dir, backup_id)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise DriverError("not_found", f"backup {backup_id} does not exist") from exc

    def store_backup(self, backup_id: UUID, data: bytes, sha256: str) -> None:
        """Keep an archive made on another node, verified against `sha256` first (`checksum_mismatch`)."""
        import hashlib
        import hmac

        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), sha256.strip().lower()):
            raise DriverError("checksum_mismatch", f"backup {backup_id} does not match its sha256")
        path = backups.archive_path(self.backups_dir, backup_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".incoming")
        staging.write_bytes(data)
        os.replace(staging, path)

    # -- offsite backups (services.agent.offsite): the node moves the bytes, over presigned URLs ------------

    def upload_backup(self, backup_id: UUID, parts: list[dict[str, Any]], part_size: int) -> list[dict[str, Any]]:
        """PUT `backups/<backup_id>.tar.gz` to the presigned part URLs; the archive stays until deleted."""
        try:
            source = backups.archive_path(self.backups_dir, backup_id).open("rb")
        except FileNotFoundError as exc:
            raise DriverError("not_found", f"backup {backup_id} has no archive on this node") from exc
        with source:
            return offsite.upload_parts(source, parts, part_size)

    def restore_offsite_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str, url: str) -> None:
        """Download the archive to `backups/<backup_id>.tar.gz` (checked against `sha256` first: a mismatch
        leaves the files untouched), restore it as a local backup, and remove the download again."""
        target = backups.archive_path(self.backups_dir, backup_id)
        offsite.download(url, target, sha256, f"backup {backup_id}")
        try:
            self.restore_backup(spec, backup_id, sha256)
        finally:
            with contextlib.suppress(OSError):
                target.unlink()

    # -- observed state ---------------------------------------------------------------------------

    def _live_servers(self) -> dict[str, ProcessRecord]:
        """Instance id -> the live server of every instance with a pid file under `data_dir`."""
        live = {}
        for pid_file in self.runtime_root.glob(f"*/{PID_FILE}"):
            record = _read_record(pid_file)
            if record is not None and record.alive():
                live[pid_file.parent.name] = record
        return live

    def stats(self, spec: InstanceSpec | UUID) -> dict[str, Any]:
        """`{"current", "history", "disk_bytes", "limits", "limits_enforced", "last_exit"}` (see `InstanceDriver`)."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return {"current": public(self.sampler.current(instance_id)),
                "history": [public(s) for s in self.sampler.history(instance_id)],
                "disk_bytes": self.disk_usage(spec), "limits": self.limits(spec).as_dict(),
                "limits_enforced": self.cgroups is not None, "last_exit": self.last_exit(spec)}

    def node_stats(self) -> dict[str, dict[str, Any]]:
        """Instance id -> the latest sample of every running server."""
        return {k: v for k, v in ((k, public(s)) for k, s in self.sampler.all_current().items()) if v is not None}

    def live_servers(self) -> dict[str, int]:
        """Instance id -> pid of every live server (for the stats sampler)."""
        return {k: r.pid for k, r in self._live_servers().items()}

    def server_state(self, instance_id: UUID) -> dict[str, Any]:
        """What the instance's last server was started with (port, readiness check, limits), or {}."""
        return self._state(instance_id)

    def probe_host(self) -> str:
        """The address the agent reaches its servers at (the bind address, or loopback for a wildcard)."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "") else "::1" if self.bind == "::" else self.bind

    def observe(self) -> dict[str, list[str]]:
        """Instances with a live server process, and instances with a data directory."""
        root = self.instances_dir
        directories = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return {"processes": sorted(self._live_servers()), "directories": sorted(directories)}

    def kill_all(self) -> None:
        """SIGKILL every server with a pid file under `data_dir` (and every child we spawned); for tests."""
        records = set(self._live_servers().values())
        with self._children_lock:
            for pid, proc in self._children.items():
                if proc.returncode is None and (record := ProcessRecord.of(pid)) is not None:
                    records.add(record)
        for record in records:
            signal_group(record, signal.SIGKILL)
        for record in records:
            if not wait_dead(record, 10.0):
                raise DriverError("stop_failed", f"server {record.pid} survived SIGKILL")
        for pid_file in self.runtime_root.glob(f"*/{PID_FILE}"):
            with contextlib.suppress(OSError):
                pid_file.unlink()
        for rt in self.runtime_root.glob("*"):
            if _is_uuid(rt.name) and (group := self.cgroup(UUID(rt.name))) is not None:
                group.remove()

    # -- process identity -------------------------------------------------------------------------

    def _server(self, spec: InstanceSpec) -> ProcessRecord | None:
        """The live server recorded in `server.pid`, or None (missing, stale, or not ours)."""
        record = _read_record(self.runtime_dir(spec) / PID_FILE)
        return record if record is not None and record.alive() else None

    def _state(self, spec: InstanceSpec | UUID) -> dict[str, Any]:
        """What the last server was started with (`server.json`), or {}."""
        try:
            state = json.loads((self.runtime_dir(spec) / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _log_tail(self, spec: InstanceSpec, limit: int = 1500) -> str:
        state = self._state(spec)
        try:
            with self.console_log_path(spec).open("rb") as f:
                f.seek(max(int(state.get("console_offset", 0)), f.seek(0, os.SEEK_END) - limit))
                data = f.read()
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _definition(spec: InstanceSpec) -> Template:
    if spec.definition is None:
        raise DriverError("unknown_template", f"template {spec.template!r} is not offered (any more)")
    return spec.definition


def _exists_inside(root: Path, path: str) -> bool:
    try:
        return os.path.lexists(files.resolve_inside(root, path))
    except DriverError:
        return True  # never write through a path that leads outside: leave it to the customer


def _open_fifo(path: Path) -> int:
    """The console FIFO, opened read-write (so the server never reads end-of-file) and blocking."""
    try:
        if not stat.S_ISFIFO(path.lstat().st_mode):
            path.unlink()
            os.mkfifo(path, 0o600)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR)


def _write_private(path: Path, text: str) -> None:
    """Write `path` readable by this user only (it holds the template's secrets)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_record(path: Path) -> ProcessRecord | None:
    try:
        return ProcessRecord.parse(path.read_text())
    except OSError:
        return None
