"""`VelocityProxy`: the `ProxyRegistry` port over a Velocity proxy's `velocity.toml` (`ZLH_PROXY=velocity`).

Velocity has no HTTP API, and servers registered at run time are forgotten at its
next restart, so the durable place for our entries is its config file. This module
owns our lines in two tables of `ZLH_VELOCITY_CONFIG`:

    [servers]
    alpha-1a2b3c4d = "203.0.113.7:30001" # zlh instance 1a2b3c4d-...
    [forced-hosts]
    "alpha-1a2b3c4d.play.example.com" = ["alpha-1a2b3c4d"] # zlh instance 1a2b3c4d-...

and nothing else: the file is edited with `tomlkit`, which keeps every other byte
(comments, order, spacing, the `try` list, other tables) as it was.

Ownership mark: the end-of-line comment `# zlh instance INSTANCE_ID` on the entry's
own line, the same text as a DNS record's comment. It lives in the same file as the
entry, so one atomic replace changes both (a sidecar file could disagree with the
config after a crash or a hand edit), and an operator reading the file sees which
lines are ours. An entry without the mark is never changed or removed
(`record_not_ours`); if a tool strips comments, our entries turn foreign, which
fails safe (a conflict to report, never an overwrite). We never add servers to the
`try` list (players would land on a stranger's server); a `try` list or a foreign
forced host naming our server blocks its removal (Velocity would refuse a config
that names an unknown server).

A change is one read-modify-write under an `fcntl.flock` on `.NAME.zlh.lock` beside
the config: write a temp file in the same directory, fsync, `os.replace` (the file
mode is kept), fsync the directory, then run `ZLH_VELOCITY_RELOAD_COMMAND` (split
with `shlex`, run without a shell, with a timeout; e.g. `velocity-reload`, or an
rcon client sending `velocity reload`). If the command fails, times out or cannot
start, the previous file is put back and `DriverError("proxy_reload_failed", ...)`
carries the tail of its output. A registration that changes nothing writes and
reloads nothing. Without a reload command the file is still kept, and Velocity
picks it up at its next restart.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Array, Item, Table

from services.adapters.edge_rules import ProxyMap, plan_register, plan_unregister
from services.infrastructure.files import atomic_write_bytes, file_lock
from services.ports import OWNERSHIP_PREFIX, DriverError

SERVERS = "servers"
FORCED_HOSTS = "forced-hosts"
FALLBACKS = "try"
#: Characters of the reload command's output kept in an error.
OUTPUT_TAIL = 800


class VelocityProxy:
    """`ProxyRegistry` over a `velocity.toml` and a reload command; see the module docstring."""

    def __init__(
        self, config_path: Path | str, reload_command: str | Sequence[str] | None = None, timeout: float = 30.0
    ) -> None:
        self.path = Path(config_path)
        if isinstance(reload_command, str):
            reload_command = shlex.split(reload_command)
        self.reload_command = list(reload_command or [])
        self.timeout = timeout
        self.lock_path = self.path.parent / f".{self.path.name}.zlh.lock"

    def __repr__(self) -> str:
        return f"VelocityProxy({str(self.path)!r})"

    # -- ProxyRegistry ------------------------------------------------------------------------------

    def register(self, server: str, address: str, forced_host: str | None, comment: str) -> str:
        self._change(lambda current: plan_register(current, server, address, forced_host, comment))
        return address

    def unregister(self, server: str, comment: str) -> bool:
        return self._change(lambda current: plan_unregister(current, server, comment))

    def list_servers(self) -> dict[str, str]:
        return self._read()[1].servers

    def list_forced_hosts(self) -> dict[str, list[str]]:
        return self._read()[1].forced

    def list_owners(self) -> dict[str, str]:
        return self._read()[1].marks

    # -- the file --------------------------------------------------------------------------------

    def _read(self) -> tuple[bytes, ProxyMap, tomlkit.TOMLDocument]:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise DriverError("edge_io_error", f"cannot read the Velocity config {self.path.name}: {reason}") from exc
        try:
            doc = tomlkit.parse(raw.decode("utf-8"))
        except (UnicodeDecodeError, TOMLKitError) as exc:
            raise DriverError("proxy_config_invalid", f"{self.path.name} is not valid TOML: {exc}") from exc
        return raw, _proxy_map(doc, self.path), doc

    def _change(self, plan: Callable[[ProxyMap], ProxyMap | None]) -> bool:
        try:
            with file_lock(self.lock_path):
                raw, current, doc = self._read()
                new = plan(current)
                if new is None or new == current:
                    return False
                _apply(doc, current, new)
                text = doc.as_string().encode("utf-8")
                if text == raw:
                    return False
                _replace(self.path, text)
                failure = self._reload()
                if failure is not None:
                    _replace(self.path, raw)
                    raise DriverError("proxy_reload_failed", f"the previous {self.path.name} is back: {failure}")
                return True
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise DriverError("edge_io_error", f"cannot update the Velocity config {self.path.name}: {reason}") from exc

    def _reload(self) -> str | None:
        """Run the reload command; None on success, else what went wrong (with the output's tail)."""
        if not self.reload_command:
            return None
        try:
            done = subprocess.run(
                self.reload_command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return f"{self.reload_command[0]} timed out after {self.timeout:g}s{_tail(exc.stderr or exc.stdout)}"
        except OSError as exc:
            return f"cannot run {self.reload_command[0]}: {exc}"
        if done.returncode != 0:
            return f"{self.reload_command[0]} exited with {done.returncode}{_tail(done.stderr or done.stdout)}"
        return None


def _tail(output: bytes | str | None) -> str:
    if not output:
        return ""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    text = text.strip()
    return f": {text[-OUTPUT_TAIL:]}" if text else ""


def _mark(item: Item) -> str | None:
    """The ownership comment on an item's line (`# zlh instance ID`), if it carries one."""
    comment = item.trivia.comment.lstrip("#").strip()
    return comment if comment.startswith(OWNERSHIP_PREFIX) else None


def _table(doc: tomlkit.TOMLDocument, name: str, path: Path) -> Table | None:
    value = doc.get(name)
    if value is None or isinstance(value, Table):
        return value
    raise DriverError("proxy_config_invalid", f"`{name}` in {path.name} must be a table")


def _proxy_map(doc: tomlkit.TOMLDocument, path: Path) -> ProxyMap:
    """What `velocity.toml` routes, and which entries carry our mark."""
    servers: dict[str, str] = {}
    marks: dict[str, str] = {}
    fallbacks: tuple[str, ...] = ()
    table = _table(doc, SERVERS, path)
    for name, item in table.items() if table is not None else ():
        if name == FALLBACKS:
            fallbacks = tuple(str(x) for x in item.unwrap()) if isinstance(item, Array) else ()
            continue
        servers[name] = str(item.unwrap()) if not isinstance(item, Table) else ""
        if (mark := _mark(item)) is not None:
            marks[name] = mark
    forced: dict[str, list[str]] = {}
    forced_marks: dict[str, str] = {}
    hosts = _table(doc, FORCED_HOSTS, path)
    for host, item in hosts.items() if hosts is not None else ():
        forced[host] = [str(x) for x in item.unwrap()] if isinstance(item, Array) else []
        if (mark := _mark(item)) is not None:
            forced_marks[host] = mark
    return ProxyMap(servers, forced, marks, forced_marks, fallbacks)


def _marked(value: Any, mark: str) -> Item:
    item = tomlkit.item(value)
    item.comment(mark)
    return item


def _apply(doc: tomlkit.TOMLDocument, old: ProxyMap, new: ProxyMap) -> None:
    """Edit `doc` in place from `old` to `new`, touching only the keys that differ."""
    for name, old_servers, new_servers, old_marks, new_marks in (
        (SERVERS, old.servers, new.servers, old.marks, new.marks),
        (FORCED_HOSTS, old.forced, new.forced, old.forced_marks, new.forced_marks),
    ):
        table = doc.get(name)
        for key in old_servers.keys() - new_servers.keys():
            del table[key]
        for key, value in new_servers.items():
            if old_servers.get(key) == value and old_marks.get(key) == new_marks.get(key):
                continue
            if table is None:
                table = tomlkit.table()
                doc[name] = table
            table[key] = _marked(value, new_marks[key])


def _replace(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically, keeping its mode (0644 for a new file)."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    atomic_write_bytes(path, data, mode)
