"""`LocalDriver`: the `InstanceDriver` that runs instances as stand-in processes on this machine.

Layout under `data_dir`:
- `instances/<id>/`: the instance's files, the customer-visible root (console,
  file browser and backups see exactly this tree);
- `runtime/<id>/`: the runtime files, out of the customer's reach: `port` (the
  allocated port), `server.pid`, `console.log`, `console.in` (command FIFO) and
  `standin.log` (the stand-in's stdout/stderr);
- `backups/<backup_id>.tar.gz`: see `services.agent.backups`.

Stand-ins run in their own session (`start_new_session`), so they outlive a
restart or crash of the control plane; the driver finds them again through
`server.pid`, trusting a pid only if `/proc/PID/cmdline` names the stand-in and
the instance's runtime directory. Per-instance process, delete and restore steps
are serialized with an `flock` on the runtime directory; port allocation with
one on `runtime/`. File access goes through `services.agent.files`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from services.agent import backups, files, standin
from services.infrastructure.files import atomic_write_text, file_lock
from services.ports import DriverError, InstanceSpec, customer_address

STANDIN_MODULE = "services.agent.standin"
PORT_FILE = "port"
STANDIN_LOG = "standin.log"
POLL_INTERVAL = 0.05
#: The directory holding the `services` package: the stand-in's working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class LocalDriver:
    """Instances as local stand-in processes. See the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        python_executable: str = sys.executable,
        host: str = "127.0.0.1",
        max_write_bytes: int = files.MAX_WRITE_BYTES,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.python_executable = python_executable
        self.host = host
        self.max_write_bytes = max_write_bytes
        self.instances_dir = self.data_dir / "instances"
        self.runtime_root = self.data_dir / "runtime"
        self.backups_dir = self.data_dir / "backups"
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._children_lock = threading.Lock()

    # -- paths and helpers ----------------------------------------------------------------------

    def instance_dir(self, spec: InstanceSpec | UUID) -> Path:
        """`DATA_DIR/instances/<id>`: the instance's files (the customer-visible root)."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return self.instances_dir / str(instance_id)

    def runtime_dir(self, spec: InstanceSpec | UUID) -> Path:
        """`DATA_DIR/runtime/<id>`: port, pid file, console log and FIFO, stand-in log."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        return self.runtime_root / str(instance_id)

    def console_log_path(self, spec: InstanceSpec | UUID) -> Path:
        """Where the stand-in appends its console output."""
        return self.runtime_dir(spec) / standin.CONSOLE_LOG

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
        return customer_address(spec.kind, self.host, port)

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
                        s.bind((self.host, 0))
                        port = int(s.getsockname()[1])
                    if port not in taken:
                        break
                else:
                    raise DriverError("no_free_port", f"no free port on {self.host}")
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

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        """Spawn the stand-in on `port`, or return the pid already running there.

        A stand-in of this instance running on another port is stopped and replaced.
        """
        with self._instance_lock(spec) as rt:
            pid = self._standin_pid(spec)
            if pid is not None:
                if _cmdline_port(pid) == port:
                    return pid
                self._stop_unlocked(spec, pid, timeout=10.0)
            return self._spawn(spec, rt, port)

    def _spawn(self, spec: InstanceSpec, rt: Path, port: int) -> int:
        argv = [
            self.python_executable, "-m", STANDIN_MODULE, spec.kind, "--port", str(port),
            "--dir", str(self.instance_dir(spec)), "--runtime", str(rt),
        ]  # fmt: skip
        try:
            with (rt / STANDIN_LOG).open("ab") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=PROJECT_ROOT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise DriverError("spawn_failed", f"cannot start {spec.kind} stand-in: {exc}") from exc
        with self._children_lock:
            self._children[proc.pid] = proc
        # Reap the child whenever it exits, so no zombies accumulate.
        threading.Thread(target=self._reap, args=(proc,), name=f"zlh-reap-{proc.pid}", daemon=True).start()
        try:
            atomic_write_text(rt / standin.PID_FILE, f"{proc.pid}\n")
        except OSError as exc:
            proc.kill()
            raise DriverError("spawn_failed", f"cannot write pid file: {exc}") from exc
        return proc.pid

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        with self._children_lock:
            self._children.pop(proc.pid, None)

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        """Poll every 50 ms until the stand-in answers (game: greeting; dev: `GET /` → 200)."""
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while True:
            if self._standin_pid(spec) is None:
                raise DriverError(
                    "process_exited",
                    f"{spec.kind} stand-in of {spec.instance_id} is not running; log tail: {self._log_tail(spec)!r}",
                )
            remaining = deadline - time.monotonic()
            try:
                self._probe(spec.kind, port, max(0.05, min(1.0, remaining)))
                return
            except OSError as exc:
                last_error = str(exc) or type(exc).__name__
            if time.monotonic() + POLL_INTERVAL >= deadline:
                raise DriverError(
                    "not_connectable",
                    f"{spec.kind} stand-in on {self.host}:{port} not connectable after {timeout}s: {last_error}",
                )
            time.sleep(POLL_INTERVAL)  # polling interval, bounded by the deadline

    def _probe(self, kind: str, port: int, timeout: float) -> None:
        """One connection attempt; raises `OSError` unless it is our stand-in answering."""
        if kind == "dev":
            conn = http.client.HTTPConnection(self.host, port, timeout=timeout)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise OSError(f"GET / answered {response.status}")
            except http.client.HTTPException as exc:
                raise OSError(f"GET /: {exc!r}") from exc
            finally:
                conn.close()
            return
        with socket.create_connection((self.host, port), timeout=timeout) as s:
            greeting = b""
            while len(greeting) < len(standin.GREETING):
                chunk = s.recv(len(standin.GREETING) - len(greeting))
                if not chunk:
                    break
                greeting += chunk
        if greeting != standin.GREETING:
            raise OSError(f"unexpected greeting {greeting!r}")

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        """The stand-in's pid is alive and `port` accepts TCP connections."""
        if self._standin_pid(spec) is None:
            return False
        try:
            with socket.create_connection((self.host, port), timeout=1.0):
                return True
        except OSError:
            return False

    # -- InstanceDriver: lifecycle ----------------------------------------------------------------

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        """Stop the stand-in: `stop` on its console, then SIGTERM, then SIGKILL. Idempotent."""
        with self._instance_lock(spec) as rt:
            pid = self._standin_pid(spec)
            if pid is not None:
                self._stop_unlocked(spec, pid, timeout)
            with contextlib.suppress(OSError):
                (rt / standin.PID_FILE).unlink()

    def _stop_unlocked(self, spec: InstanceSpec, pid: int, timeout: float) -> None:
        with contextlib.suppress(DriverError):
            self._write_fifo(spec, "stop")
        if _wait_dead(pid, timeout):
            return
        for sig, grace in ((signal.SIGTERM, min(timeout, 5.0)), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_dead(pid, grace):
                return
        raise DriverError("stop_failed", f"stand-in {pid} of {spec.instance_id} survived SIGKILL")

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Delete `instances/<id>/` and `runtime/<id>/` (port reservation included); idempotent.

        `still_running` while the stand-in runs.
        """
        files_dir, rt = self.instance_dir(spec), self.runtime_dir(spec)
        if not files_dir.exists() and not rt.exists():
            return
        with self._instance_lock(spec):
            if self._standin_pid(spec) is not None:
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
        """Send one command line to the stand-in's console FIFO."""
        if "\n" in line or "\r" in line:
            raise DriverError("bad_command", "a console command is a single line")
        if self._standin_pid(spec) is None:
            raise DriverError("not_running", f"instance {spec.instance_id} is not running")
        self._write_fifo(spec, line)

    def _write_fifo(self, spec: InstanceSpec, line: str) -> None:
        data = (line + "\n").encode()
        if len(data) > 4096:  # PIPE_BUF: longer writes are not atomic
            raise DriverError("bad_command", "console command too long")
        path = self.runtime_dir(spec) / standin.CONSOLE_IN
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

    def console_log(self, spec: InstanceSpec | UUID) -> str:
        """The stand-in's console output so far ('' if none)."""
        try:
            return self.console_log_path(spec).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        """`[{"name", "type", "size"}]` of a directory under `instances/<id>/`."""
        return files.list_dir(self.instance_dir(spec), path)

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        """The bytes of a file under `instances/<id>/`."""
        return files.read_file(self.instance_dir(spec), path)

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        """Atomically write a file under `instances/<id>/`; `too_large` above `max_write_bytes`."""
        files.write_file(self.instance_dir(spec), path, content, self.max_write_bytes)

    # -- InstanceDriver: backups ------------------------------------------------------------------

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict[str, Any]:
        """Archive `instances/<id>/` to `backups/<backup_id>.tar.gz` (idempotent); return the manifest."""
        return backups.create_backup(self.instance_dir(spec), self.backups_dir, backup_id)

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        """Verify and swap in the archive's files; `still_running` while the stand-in runs."""
        with self._instance_lock(spec):
            if self._standin_pid(spec) is not None:
                raise DriverError("still_running", f"instance {spec.instance_id} must be stopped to restore")
            backups.restore_backup(self.instance_dir(spec), self.backups_dir, backup_id, sha256)

    def delete_backup(self, backup_id: UUID) -> None:
        """Remove `backups/<backup_id>.tar.gz`; idempotent."""
        backups.delete_backup(self.backups_dir, backup_id)

    # -- for tests --------------------------------------------------------------------------------

    def _live_standins(self) -> dict[str, int]:
        """Instance id -> pid of every live stand-in with a pid file under `data_dir`."""
        live = {}
        for pid_file in self.runtime_root.glob(f"*/{standin.PID_FILE}"):
            pid = _read_int(pid_file)
            if pid is not None and _is_standin(pid, pid_file.parent):
                live[pid_file.parent.name] = pid
        return live

    def observe(self) -> dict[str, list[str]]:
        """Instances with a live stand-in process, and instances with a data directory."""
        root = self.instances_dir
        directories = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        return {"processes": sorted(self._live_standins()), "directories": sorted(directories)}

    def kill_all(self) -> None:
        """SIGKILL every stand-in with a pid file under `data_dir` (and every child we spawned); for tests."""
        pids = set(self._live_standins().values())
        with self._children_lock:
            pids.update(pid for pid, proc in self._children.items() if proc.returncode is None)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            if not _wait_dead(pid, 10.0):
                raise DriverError("stop_failed", f"stand-in {pid} survived SIGKILL")
        for pid_file in self.runtime_root.glob(f"*/{standin.PID_FILE}"):
            with contextlib.suppress(OSError):
                pid_file.unlink()

    # -- process identity -------------------------------------------------------------------------

    def _standin_pid(self, spec: InstanceSpec) -> int | None:
        """The live stand-in pid from `server.pid`, or None (missing, stale, or not ours)."""
        rt = self.runtime_dir(spec)
        pid = _read_int(rt / standin.PID_FILE)
        if pid is None or not _is_standin(pid, rt):
            return None
        return pid

    def _log_tail(self, spec: InstanceSpec, limit: int = 500) -> str:
        try:
            data = (self.runtime_dir(spec) / STANDIN_LOG).read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").split("\0")


def _alive(pid: int) -> bool:
    """The pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"] and state != ["X"]


def _is_standin(pid: int, runtime_dir: Path) -> bool:
    """`pid` is alive and is the stand-in whose runtime dir is `runtime_dir` (pid files may be stale or lie)."""
    if not _alive(pid):
        return False
    args = _cmdline(pid)
    return STANDIN_MODULE in args and _arg_after(args, "--runtime") == str(runtime_dir)


def _cmdline_port(pid: int) -> int | None:
    value = _arg_after(_cmdline(pid), "--port")
    return int(value) if value and value.isdigit() else None


def _arg_after(args: list[str], flag: str) -> str | None:
    try:
        return args[args.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def _wait_dead(pid: int, timeout: float) -> bool:
    """Poll until `pid` is gone (or a zombie); return whether it is."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL / 5)
    return True
