"""`FakeDriver`: an in-memory `InstanceDriver` with the same contract as `LocalDriver`, for tests.

Ports come from a counter starting at 30000, processes live in a dict.
`fail_on[method] = DriverError(...)` makes that method
raise (until the key is removed); `calls` records `(method, instance_id)` for
every step, failed ones included, in order (`(method, backup_id)` for
`delete_backup`).

Files are a dict per instance from relative path (`a/b.txt`) to bytes;
directories are implied by the paths of the files in them. Customer paths go
through the same pure checks as the local driver's (`files.normalize`), so
`..` is `bad_path` here too; there are no symlinks. Backups are a deterministic
serialization of that dict (sorted JSON, base64 contents) with its sha256;
restore checks the checksum and replaces the dict. The console keeps the
commands sent (`commands`) and the output lines (`console_output`: `say TEXT`
prints `[server] TEXT`), and `console(spec)` offers an in-memory stand-in for
the agent client's console WebSocket.

Templates: `install` records the template as installed (`installed`, once per
template and install key, as a node's cache would) and `start_process` needs it
(`not_installed`); `start_process` renders the template's config files into the
files dict as a node would (`missing`: only when absent; `always`: every start),
with fake node paths. Nothing is downloaded and nothing runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from websockets.exceptions import ConnectionClosedOK
from websockets.frames import Close

from domain.templates import TemplateError
from services.agent import files as file_paths
from services.agent import offsite
from services.ports import DriverError, InstanceSpec, spec_address

#: The node paths the fake renders templates with.
FAKE_NODE = {"host": "127.0.0.1", "bind": "127.0.0.1", "files": "/fake/instances/ID", "home": "/fake/runtime/ID/home",
             "runtime": "/fake/runtime/ID", "cache": "/fake/cache/templates/KEY", "downloads": "/fake/cache/downloads",
             "system_python": "/usr/bin/python3"}


@dataclass
class FakeProcess:
    """A pretend server process."""

    pid: int
    port: int
    kind: str


class FakeDriver:
    """In-memory driver; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", max_write_bytes: int = file_paths.MAX_WRITE_BYTES,
                 disk_quota: int = 10 * 1024**3) -> None:
        self.host = host
        self.max_write_bytes = max_write_bytes
        #: The disk quota of every instance's files (the sum of their sizes), as the agent enforces it.
        self.disk_quota = disk_quota
        #: Instance id -> what `stats` reports while its process runs (tests set it; zeros otherwise).
        self.samples: dict[UUID, dict[str, Any]] = {}
        #: Instance id -> how its server last ended (`{"reason", ...}`), as the agent's `exit.json`.
        self.exits: dict[UUID, dict[str, Any]] = {}
        self.fail_on: dict[str, DriverError] = {}
        self.calls: list[tuple[str, UUID]] = []
        self.ports: dict[UUID, int] = {}
        self.directories: dict[UUID, str] = {}
        self.files: dict[UUID, dict[str, bytes]] = {}
        self.processes: dict[UUID, FakeProcess] = {}
        self.commands: dict[UUID, list[str]] = {}
        self.console_output: dict[UUID, list[str]] = {}
        self.backups: dict[UUID, tuple[bytes, dict[str, Any]]] = {}
        #: Install keys the fake node has (`template-KEY`), in the order they were installed.
        self.installed: list[str] = []
        self._next_port = 30000
        self._next_pid = 1000

    def _step(self, method: str, spec: InstanceSpec | UUID) -> None:
        self.calls.append((method, spec.instance_id if isinstance(spec, InstanceSpec) else spec))
        error = self.fail_on.get(method)
        if error is not None:
            raise error

    # -- InstanceDriver -------------------------------------------------------------------------

    def allocate_port(self, spec: InstanceSpec) -> int:
        self._step("allocate_port", spec)
        if spec.instance_id not in self.ports:
            self.ports[spec.instance_id] = self._next_port
            self._next_port += 1
        return self.ports[spec.instance_id]

    def create_directory(self, spec: InstanceSpec) -> str:
        self._step("create_directory", spec)
        self.files.setdefault(spec.instance_id, {})
        return self.directories.setdefault(spec.instance_id, f"/fake/instances/{spec.instance_id}")

    def _install_key(self, spec: InstanceSpec) -> str:
        if spec.definition is None:
            raise DriverError("unknown_template", f"template {spec.template!r} is not offered")
        key = spec.definition.install_key(spec.variables, FAKE_NODE["system_python"])
        return f"{spec.definition.name}-{key[:12]}"

    def install(self, spec: InstanceSpec) -> dict[str, Any]:
        self._step("install", spec)
        cache = self._install_key(spec)
        reused = cache in self.installed
        if not reused:
            self.installed.append(cache)
        return {"cache": cache, "reused": reused, "seconds": 0.0}

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        self._step("start_process", spec)
        proc = self.processes.get(spec.instance_id)
        if proc is not None and proc.port == port:
            return proc.pid
        if self._install_key(spec) not in self.installed:
            raise DriverError("not_installed", f"template {spec.template} is not installed on this node")
        # Like a node: the files directory exists once it runs, with the template's config files in it.
        self.directories.setdefault(spec.instance_id, f"/fake/instances/{spec.instance_id}")
        tree = self.files.setdefault(spec.instance_id, {})
        assert spec.definition is not None
        values = {**spec.variables, **FAKE_NODE, "port": port, "instance_id": str(spec.instance_id)}
        try:
            rendered = spec.definition.render_files(values)
        except TemplateError as exc:
            raise DriverError("template_error", exc.message) from exc
        for config in rendered:
            key = "/".join(file_paths.normalize(config.path))
            if config.when == "always" or key not in tree:
                tree[key] = config.content.encode()
        self._next_pid += 1
        self.processes[spec.instance_id] = FakeProcess(self._next_pid, port, spec.kind)
        self.commands.setdefault(spec.instance_id, [])
        self._print(spec.instance_id, f"{spec.template} listening on {self.host}:{port} (pid {self._next_pid})")
        return self._next_pid

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        self._step("wait_connectable", spec)
        proc = self.processes.get(spec.instance_id)
        if proc is None:
            raise DriverError("process_exited", f"{spec.kind} process of {spec.instance_id} is not running")
        if proc.port != port:
            raise DriverError("not_connectable", f"nothing listens on {self.host}:{port}")

    def public_host(self, spec: InstanceSpec) -> str:
        return self.host

    def address(self, spec: InstanceSpec, port: int) -> str:
        return spec_address(spec, self.host, port)

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        proc = self.processes.get(spec.instance_id)
        return proc is not None and proc.port == port

    # -- beyond the protocol (mirrors LocalDriver) ----------------------------------------------

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        self._step("stop_process", spec)
        self.processes.pop(spec.instance_id, None)

    def send_console(self, spec: InstanceSpec, line: str) -> None:
        self._step("send_console", spec)
        if "\n" in line or "\r" in line:
            raise DriverError("bad_command", "a console command is a single line")
        if spec.instance_id not in self.processes:
            raise DriverError("not_running", f"instance {spec.instance_id} is not running")
        self.commands[spec.instance_id].append(line)
        command, _, rest = line.strip().partition(" ")
        if command == "say":
            self._print(spec.instance_id, rest.strip())
        elif command == "stop":
            self._print(spec.instance_id, "stopping")
            del self.processes[spec.instance_id]
            self._print(spec.instance_id, "stopped")
        elif command:
            self._print(spec.instance_id, f"unknown command: {command}")

    def _print(self, instance_id: UUID, text: str) -> None:
        self.console_output.setdefault(instance_id, []).append(f"[server] {text}")

    def console_log(self, spec: InstanceSpec | UUID, lines: int | None = None) -> str:
        """The console output so far (its last `lines` lines), as the local driver's `console.log` holds it."""
        instance_id = spec.instance_id if isinstance(spec, InstanceSpec) else spec
        output = self.console_output.get(instance_id, [])
        return "".join(line + "\n" for line in (output[-lines:] if lines is not None else output))

    def console(self, spec: InstanceSpec, connect_timeout: float = 10.0) -> FakeConsole:
        """Like `AgentDriver.console`: `async with driver.console(spec) as ws` (see `FakeConsole`)."""
        self._step("console", spec)
        return FakeConsole(self, spec)

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Like the local driver: refuses while running, and frees the port reservation."""
        self._step("remove_directory", spec)
        if spec.instance_id in self.processes:
            raise DriverError("still_running", f"instance {spec.instance_id} is still running")
        self.directories.pop(spec.instance_id, None)
        self.files.pop(spec.instance_id, None)
        self.ports.pop(spec.instance_id, None)
        self.console_output.pop(spec.instance_id, None)

    # -- files -----------------------------------------------------------------------------------

    def _tree(self, spec: InstanceSpec) -> dict[str, bytes]:
        tree = self.files.get(spec.instance_id)
        if tree is None:
            raise DriverError("not_found", "the instance has no files directory")
        return tree

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        self._step("list_files", spec)
        parts = file_paths.normalize(path)
        tree = self._tree(spec)
        shown = file_paths.display(parts)
        prefix = "/".join(parts)
        if prefix in tree:
            raise DriverError("not_a_directory", f"{shown!r} is not a directory")
        entries: dict[str, dict[str, Any]] = {}
        found = False
        for key, content in tree.items():
            if prefix and not key.startswith(prefix + "/"):
                continue
            found = True
            rest = key[len(prefix) + 1 :] if prefix else key
            if not rest:
                continue  # the marker of an empty directory (`make_directory`): the directory itself
            name, sep, _ = rest.partition("/")
            entries[name] = (
                {"name": name, "type": "dir", "size": 0}
                if sep
                else {"name": name, "type": "file", "size": len(content)}
            )
        if prefix and not found:
            raise DriverError("not_found", f"{shown!r} does not exist")
        return sorted(entries.values(), key=lambda e: (e["type"] != "dir", e["name"]))

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        self._step("read_file", spec)
        parts = file_paths.normalize(path)
        tree = self._tree(spec)
        shown = file_paths.display(parts)
        key = "/".join(parts)
        if key in tree:
            return tree[key]
        if not parts or any(k.startswith(key + "/") for k in tree):
            raise DriverError("is_a_directory", f"{shown!r} is a directory")
        raise DriverError("not_found", f"{shown!r} does not exist")

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        self._step("write_file", spec)
        if len(content) > self.max_write_bytes:
            raise DriverError("too_large", f"a file may hold at most {self.max_write_bytes} bytes, got {len(content)}")
        parts = file_paths.normalize(path)
        tree = self._tree(spec)
        shown = file_paths.display(parts)
        key = "/".join(parts)
        if not parts or any(k.startswith(key + "/") for k in tree):
            raise DriverError("is_a_directory", f"{shown!r} is a directory")
        if any("/".join(parts[:i]) in tree for i in range(1, len(parts))):
            raise DriverError("not_a_directory", f"a parent of {shown!r} is not a directory")
        used = sum(len(v) for v in tree.values())
        after = used - len(tree.get(key, b"")) + len(content)
        if after > self.disk_quota:
            raise DriverError("quota_exceeded", f"writing {len(content)} bytes would bring the server's files to "
                              f"{after} bytes, over its disk quota of {self.disk_quota} bytes ({used} in use)")
        tree[key] = bytes(content)

    # -- stats -----------------------------------------------------------------------------------

    def _sample(self, instance_id: UUID) -> dict[str, Any]:
        game = self.processes[instance_id].kind == "game"
        base = {"cpu_percent": 0.0, "memory_bytes": 0, "disk_bytes": sum(len(v) for v in self.files.get(instance_id,
                {}).values()), "players_online": 0 if game else None, "players_max": 20 if game else None,
                "sampled_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        return {**base, **self.samples.get(instance_id, {})}

    def stats(self, spec: InstanceSpec) -> dict[str, Any]:
        if (error := self.fail_on.get("stats")) is not None:  # not in `calls`: reading stats is no step
            raise error
        current = self._sample(spec.instance_id) if spec.instance_id in self.processes else None
        disk = sum(len(v) for v in self.files.get(spec.instance_id, {}).values())
        return {"current": current, "history": [current] if current else [], "disk_bytes": disk,
                "limits": {"memory_mb": 0, "cpus": 0.0, "disk_bytes": self.disk_quota}, "limits_enforced": False,
                "last_exit": self.exits.get(spec.instance_id)}

    def node_stats(self) -> dict[str, dict[str, Any]]:
        return {str(i): self._sample(i) for i in self.processes}

    # A directory is implicit in the paths of its files; an empty one is a key ending in "/".

    def _exists(self, tree: dict[str, bytes], key: str) -> bool:
        return key in tree or any(k.startswith(key + "/") for k in tree)

    def _keep_parent(self, tree: dict[str, bytes], key: str) -> None:
        """A directory whose last entry went stays, as an empty one."""
        parent = key.rpartition("/")[0]
        if parent and not self._exists(tree, parent):
            tree[parent + "/"] = b""

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        self._step("make_directory", spec)
        parts = file_paths.normalize(path)
        tree = self._tree(spec)
        key = "/".join(parts)
        if not parts:
            raise DriverError("bad_path", "'/' is the instance's root")
        if self._exists(tree, key):
            raise DriverError("already_exists", f"{file_paths.display(parts)!r} already exists")
        if any("/".join(parts[:i]) in tree for i in range(1, len(parts))):
            raise DriverError("not_a_directory", f"a parent of {file_paths.display(parts)!r} is not a directory")
        tree[key + "/"] = b""

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        self._step("delete_path", spec)
        parts = file_paths.normalize(path)
        tree = self._tree(spec)
        shown, key = file_paths.display(parts), "/".join(parts)
        if not parts:
            raise DriverError("bad_path", "'/' is the instance's root")
        if not self._exists(tree, key):
            raise DriverError("not_found", f"{shown!r} does not exist")
        if key in tree:
            if directory:
                raise DriverError("not_a_directory", f"{shown!r} is not a directory")
            del tree[key]
            self._keep_parent(tree, key)
            return
        if not directory:
            raise DriverError("is_a_directory", f"{shown!r} is a directory")
        if any(k.startswith(key + "/") and k != key + "/" for k in tree):
            raise DriverError("not_empty", f"{shown!r} is not empty")
        tree.pop(key + "/", None)
        self._keep_parent(tree, key)

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        self._step("rename_path", spec)
        src, dst = file_paths.normalize(source), file_paths.normalize(target)
        tree = self._tree(spec)
        src_key, dst_key = "/".join(src), "/".join(dst)
        if not src or not dst:
            raise DriverError("bad_path", "'/' is the instance's root")
        if not self._exists(tree, src_key):
            raise DriverError("not_found", f"{file_paths.display(src)!r} does not exist")
        if dst[: len(src)] == src and dst != src:
            raise DriverError("bad_path", f"cannot move {file_paths.display(src)!r} into itself")
        if self._exists(tree, dst_key) and not (overwrite and dst_key in tree and src_key in tree):
            raise DriverError("already_exists", f"{file_paths.display(dst)!r} already exists")
        for key in [k for k in tree if k == src_key or k.startswith(src_key + "/")]:
            tree[dst_key + key[len(src_key):]] = tree.pop(key)
        self._keep_parent(tree, src_key)

    # -- backups ---------------------------------------------------------------------------------

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict[str, Any]:
        self._step("create_backup", spec)
        if backup_id in self.backups:
            return dict(self.backups[backup_id][1])
        tree = self._tree(spec)
        blob = _serialize(tree)
        created_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        manifest = {
            "size": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "created_at": created_at,
            "path": f"/fake/backups/{backup_id}.tar.gz",
        }
        self.backups[backup_id] = (blob, manifest)
        return dict(manifest)

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        self._step("restore_backup", spec)
        if spec.instance_id in self.processes:
            raise DriverError("still_running", f"instance {spec.instance_id} must be stopped to restore")
        stored = self.backups.get(backup_id)
        if stored is None:
            raise DriverError("not_found", f"backup {backup_id} does not exist")
        blob = stored[0]
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), str(sha256).strip().lower()):
            raise DriverError("checksum_mismatch", f"backup {backup_id} does not match its recorded sha256")
        self.files[spec.instance_id] = _deserialize(blob)
        self.directories.setdefault(spec.instance_id, f"/fake/instances/{spec.instance_id}")

    def delete_backup(self, backup_id: UUID) -> None:
        self._step("delete_backup", backup_id)
        self.backups.pop(backup_id, None)

    def fetch_backup(self, backup_id: UUID) -> bytes:
        self._step("fetch_backup", backup_id)
        if backup_id not in self.backups:
            raise DriverError("not_found", f"backup {backup_id} does not exist")
        return self.backups[backup_id][0]

    def store_backup(self, backup_id: UUID, data: bytes, sha256: str) -> None:
        self._step("store_backup", backup_id)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DriverError("checksum_mismatch", f"backup {backup_id} does not match its sha256")
        self.backups[backup_id] = (data, {"size": len(data), "sha256": sha256, "created_at": "",
                                          "path": f"/fake/backups/{backup_id}.tar.gz"})

    def upload_backup(self, backup_id: UUID, parts: list[dict[str, Any]], part_size: int) -> list[dict[str, Any]]:
        """Really PUTs the fake archive to the presigned URLs (the agent's code), so offsite storage is real."""
        self._step("upload_backup", backup_id)
        stored = self.backups.get(backup_id)
        if stored is None:
            raise DriverError("not_found", f"backup {backup_id} has no archive on this node")
        return offsite.upload_parts(io.BytesIO(stored[0]), parts, part_size)

    def restore_offsite_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str, url: str) -> None:
        """Really GETs the object and checks it (the agent's code) before replacing the files."""
        self._step("restore_offsite_backup", spec)
        if spec.instance_id in self.processes:
            raise DriverError("still_running", f"instance {spec.instance_id} must be stopped to restore")
        received = io.BytesIO()
        offsite.check(offsite.fetch(url, received, f"backup {backup_id}"), sha256, f"backup {backup_id}")
        self.files[spec.instance_id] = _deserialize(received.getvalue())
        self.directories.setdefault(spec.instance_id, f"/fake/instances/{spec.instance_id}")

    def observe(self) -> dict[str, list[str]]:
        return {"processes": [str(i) for i in self.processes], "directories": [str(i) for i in self.directories]}

    def kill_all(self) -> None:
        self.processes.clear()

    # -- test helpers ---------------------------------------------------------------------------

    def crash(self, instance_id: UUID) -> None:
        """Simulate the instance's process dying on its own."""
        self.processes.pop(instance_id, None)

    def corrupt_backup(self, backup_id: UUID) -> None:
        """Flip the stored archive's bytes, so its recorded sha256 no longer matches."""
        blob, manifest = self.backups[backup_id]
        self.backups[backup_id] = (blob + b" ", manifest)


def _serialize(tree: dict[str, bytes]) -> bytes:
    """Deterministic bytes for a files dict: sorted JSON of base64 contents."""
    return json.dumps({k: base64.b64encode(v).decode() for k, v in tree.items()}, sort_keys=True).encode()


def _deserialize(blob: bytes) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in json.loads(blob).items()}


def _closed() -> ConnectionClosedOK:
    return ConnectionClosedOK(None, Close(1000, ""))


class FakeConsole:
    """An in-memory console socket with the parts of `websockets`' client API a relay uses.

    `async with` it (or `await` it) to connect; `recv()` returns the console lines, the last
    100 first, then new ones as they are printed; `send(text)` runs a command (a `DriverError`
    comes back as a `[zlh] CODE: MESSAGE` line); `async for` iterates lines; `close()` ends it,
    after which `send`/`recv` raise `websockets.exceptions.ConnectionClosedOK`, as a real one would.
    """

    POLL = 0.01

    def __init__(self, driver: FakeDriver, spec: InstanceSpec, tail: int = 100) -> None:
        self._driver = driver
        self._spec = spec
        lines = driver.console_output.get(spec.instance_id, [])
        self._next = max(0, len(lines) - tail)
        self._notes: list[str] = []
        self.closed = False

    def __await__(self) -> Any:
        async def _self() -> FakeConsole:
            return self

        return _self().__await__()

    async def __aenter__(self) -> FakeConsole:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, message: str | bytes) -> None:
        if self.closed:
            raise _closed()
        text = message.decode() if isinstance(message, bytes) else message
        for line in text.splitlines() or [""]:
            try:
                self._driver.send_console(self._spec, line)
            except DriverError as exc:
                self._notes.append(f"[zlh] {exc.code}: {exc.message}")

    async def recv(self) -> str:
        while not self.closed:
            if self._notes:
                return self._notes.pop(0)
            lines = self._driver.console_output.get(self._spec.instance_id, [])
            if self._next < len(lines):
                self._next += 1
                return lines[self._next - 1]
            await asyncio.sleep(self.POLL)
        raise _closed()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            try:
                yield await self.recv()
            except ConnectionClosedOK:
                return

    async def close(self) -> None:
        self.closed = True
