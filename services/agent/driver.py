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
from services.agent import backups, files, readiness
from services.agent.installs import Installer
from services.agent.processes import ProcessLauncher, ProcessRecord, signal_group, wait_dead
from services.infrastructure.files import atomic_write_text, file_lock
from services.ports import DriverError, InstanceSpec, spec_address

log = logging.getLogger(__name__)

PORT_FILE = "port"
PID_FILE = "server.pid"
STATE_FILE = "server.json"
CONSOLE_LOG = "console.log"
CONSOLE_IN = "console.in"
HOME_DIR = "home"
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
            except OSError as exc:
                raise DriverError("io_error", f"creating {files_dir}: {exc}") from exc
            for config in configs:
                if config.when == "always" or not _exists_inside(files_dir, config.path):
                    self.write_file(spec, config.path, config.content.encode())
            return self._spawn(spec, rt, port, start.command, start.env, Path(start.cwd),
                               {"port": port, "template": definition.name, "stop": dataclasses.asdict(stop),
                                "ready": dataclasses.asdict(ready)})

    def _spawn(self, spec: InstanceSpec, rt: Path, port: int, argv: tuple[str, ...], env: dict[str, str],
               cwd: Path, state: dict[str, Any]) -> int:
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
            proc = self.launcher.spawn_server(spec, list(argv), cwd=cwd, env=server_env, stdin=stdin, stdout=out)
        finally:
            os.close(stdin)
            os.close(out)
        with self._children_lock:
            self._children[proc.pid] = proc
        # Reap the child whenever it exits, so no zombies accumulate.
        threading.Thread(target=self._reap, args=(proc,), name=f"zlh-reap-{proc.pid}", daemon=True).start()
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

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        with self._children_lock:
            self._children.pop(proc.pid, None)

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
                self._stop_unlocked(spec, record, timeout)
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
        """Atomically write a file under `instances/<id>/`; `too_large` above `max_write_bytes`.

        The one place the agent writes into an instance's files: the customer's writes and the template's
        config files alike.
        """
        files.write_file(self.instance_dir(spec), path, content, self.max_write_bytes)

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        """Create a directory (and missing parents) under `instances/<id>/`."""
        files.make_directory(self.instance_dir(spec), path)

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        """Remove a file (or an empty directory, with `directory`) under `instances/<id>/`."""
        files.delete_path(self.instance_dir(spec), path, directory)

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        """Move an entry to another path under `instances/<id>/`."""
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
            backups.restore_backup(self.instance_dir(spec), self.backups_dir, backup_id, sha256)

    def delete_backup(self, backup_id: UUID) -> None:
        """Remove `backups/<backup_id>.tar.gz`; idempotent."""
        backups.delete_backup(self.backups_dir, backup_id)

    # -- observed state ---------------------------------------------------------------------------

    def _live_servers(self) -> dict[str, ProcessRecord]:
        """Instance id -> the live server of every instance with a pid file under `data_dir`."""
        live = {}
        for pid_file in self.runtime_root.glob(f"*/{PID_FILE}"):
            record = _read_record(pid_file)
            if record is not None and record.alive():
                live[pid_file.parent.name] = record
        return live

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

    # -- process identity -------------------------------------------------------------------------

    def _server(self, spec: InstanceSpec) -> ProcessRecord | None:
        """The live server recorded in `server.pid`, or None (missing, stale, or not ours)."""
        record = _read_record(self.runtime_dir(spec) / PID_FILE)
        return record if record is not None and record.alive() else None

    def _state(self, spec: InstanceSpec) -> dict[str, Any]:
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
