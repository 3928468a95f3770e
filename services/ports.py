"""Ports: the interfaces through which services reach the outside world.

Each port is a `typing.Protocol` with a docstring contract; real adapters and
in-memory fakes live in `services.adapters` and both satisfy the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from domain.templates import DEFAULT_ADDRESS, Template


class DriverError(Exception):
    """An infrastructure step failed; `code` is stable and goes into the operation error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InstanceSpec:
    """What a driver needs to know about an instance to act on it.

    `variables` and `definition` matter to the steps that install, start or address a server
    (`install`, `start_process`, `address`); the others work without them (equality and hashing
    ignore them). `definition` is the template the node runs (install steps, start command, stop
    command, readiness check, config files, resources), `variables` its resolved variables,
    secrets included: the node agent renders the one with the other.
    """

    instance_id: UUID
    kind: str  # "game" | "dev"
    template: str
    edge_name: str  # NAME-SHORTID, unique across customers
    variables: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    definition: Template | None = field(default=None, compare=False, repr=False)


def customer_address(kind: str, host: str, port: int) -> str:
    """What a customer connects to by default: `host:port` for a game server, the IDE's URL for a dev container."""
    return DEFAULT_ADDRESS[kind].replace("${host}", host).replace("${port}", str(port))


def spec_address(spec: InstanceSpec, host: str, port: int) -> str:
    """What the customer connects to: the template's `address` (e.g. JupyterLab's URL with its token)."""
    if spec.definition is None:
        return customer_address(spec.kind, host, port)
    return spec.definition.render_address(host, port, spec.variables)


class ConsoleSocket(Protocol):
    """One live console session (a websockets client connection, or the fake's stand-in)."""

    async def recv(self) -> str | bytes: ...

    async def send(self, message: str) -> None: ...


class InstanceDriver(Protocol):
    """Runs instances on some infrastructure, one idempotent step at a time.

    Contract, for every method:
    - idempotent: calling it again with the same arguments after success changes
      nothing more and returns the same result;
    - raises `DriverError` with a stable `code` on failure, never anything else
      for expected failures;
    - blocks until the effect is done (or failed).
    """

    def allocate_port(self, spec: InstanceSpec) -> int:
        """Pick a free TCP port on the instance's host and reserve it for the instance."""
        ...

    def create_directory(self, spec: InstanceSpec) -> str:
        """Create the instance's data directory; return its path."""
        ...

    def install(self, spec: InstanceSpec) -> dict[str, Any]:
        """Install what the instance's template needs (`spec.definition`'s install steps) on the instance's
        node, once per node: later calls, for this or any other instance of the same template, reuse it.

        Returns `{"cache": name of the install on the node, "reused": bool, "seconds": float}`.
        `unknown_template` without a definition; `install_failed` if a step fails (the node's log has
        its output); `checksum_mismatch` if a download does not match its sha256 (nothing is kept).
        """
        ...

    def start_process(self, spec: InstanceSpec, port: int) -> int:
        """Render the template's config files and start its server listening on `port`; return its pid.

        Needs `install` first (`not_installed`). If it is already running on that port, return the
        running pid. The server's stdin is its console; its stdout and stderr are its console log.
        """
        ...

    def wait_connectable(self, spec: InstanceSpec, port: int, timeout: float) -> None:
        """Return once the template's readiness check passes (a Minecraft Server List Ping answers, an HTTP
        GET answers 2xx, or a console line matches) on `port`; `process_exited` as soon as the server
        exits, `not_connectable` after `timeout` s."""
        ...

    def public_host(self, spec: InstanceSpec) -> str:
        """The host name or address players reach the instance's node at (the edge points there)."""
        ...

    def address(self, spec: InstanceSpec, port: int) -> str:
        """What the customer connects to: `host:port` for game, the IDE URL for dev."""
        ...

    def is_running(self, spec: InstanceSpec, port: int) -> bool:
        """Whether the instance's process is alive and accepting connections."""
        ...

    # Lifecycle: each idempotent; "already gone/stopped" counts as done.

    def stop_process(self, spec: InstanceSpec, timeout: float = 10.0) -> None:
        """Graceful stop: the template's stop command on the console, then SIGTERM, then SIGKILL, each after
        `timeout` s (or the template's own stop timeout, when it is longer)."""
        ...

    def remove_directory(self, spec: InstanceSpec) -> None:
        """Delete the instance's files (the process must be stopped: else `still_running`)."""
        ...

    # Console and files. Paths are relative to the instance root; escaping it is `bad_path`.

    def send_console(self, spec: InstanceSpec, line: str) -> None: ...

    def console_log(self, spec: InstanceSpec, lines: int = 100) -> str:
        """The last `lines` lines of the server's console output, newline-terminated."""
        ...

    def console(self, spec: InstanceSpec, connect_timeout: float = 10.0) -> AbstractAsyncContextManager[ConsoleSocket]:
        """The live console: `async with driver.console(spec) as ws` gives a socket whose `recv()` yields
        output lines (the recent ones first) and whose `send(line)` runs a command. Connecting takes at
        most `connect_timeout` s (`agent_timeout`); the socket ends when the server stops."""
        ...

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict]:
        """`[{"name", "type": "file"|"dir", "size"}]` of a directory; `not_found` if missing."""
        ...

    def read_file(self, spec: InstanceSpec, path: str) -> bytes: ...

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        """Atomic write; larger than the driver's limit is `too_large`."""
        ...

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        """Create a directory and its missing parents; `already_exists` if the path is taken."""
        ...

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        """Remove a file or symlink, or with `directory` an empty directory (`not_empty`, `not_found`,
        `is_a_directory`, `not_a_directory`); `/` is `bad_path`."""
        ...

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        """Move an entry (a symlink itself, not its target); an existing target is `already_exists` unless
        `overwrite`; the target's directory must exist (`not_found`)."""
        ...

    # Backups: `.tar.gz` archives of the instance's files, kept outside the instance directory.

    def create_backup(self, spec: InstanceSpec, backup_id: UUID) -> dict:
        """Archive the files; return the manifest `{"size", "sha256", "created_at", "path"}`."""
        ...

    def restore_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str) -> None:
        """Verify the archive's checksum, then replace the files atomically (`checksum_mismatch`,
        `not_found`); on any failure the old files stay in place. The process must be stopped."""
        ...

    def delete_backup(self, backup_id: UUID) -> None: ...

    # Offsite backups: the node moves its archive itself, over presigned URLs (it holds no storage secret).

    def upload_backup(self, backup_id: UUID, parts: list[dict], part_size: int) -> list[dict]:
        """PUT the node's archive `backups/<backup_id>.tar.gz` to `parts` (`[{"number", "url"}]`, part `n`
        being bytes `[(n-1)*part_size, n*part_size)`); return `[{"number", "etag"}]`. The archive stays
        (`delete_backup` removes it). `not_found` without an archive, `offsite_failed` if storage refuses."""
        ...

    def restore_offsite_backup(self, spec: InstanceSpec, backup_id: UUID, sha256: str, url: str) -> None:
        """`restore_backup` from the object at `url` (a presigned GET): downloaded and checked against
        `sha256` first (`checksum_mismatch`, the files untouched), then restored; the download is removed."""
        ...

    # Live stats (sampled by the node, kept in its memory; not events).

    def stats(self, spec: InstanceSpec) -> dict:
        """`{"current": sample or None while not running, "history": [samples, oldest first, 15 minutes],
        "disk_bytes", "limits": {"memory_mb", "cpus", "disk_bytes"}, "limits_enforced", "last_exit"}`; a
        sample is `{"cpu_percent", "memory_bytes", "disk_bytes", "players_online", "players_max",
        "sampled_at"}`, `last_exit` None or `{"reason": "out_of_memory"|"stopped"|"killed"|"exited", ...}`."""
        ...

    def node_stats(self) -> dict:
        """Instance id -> the latest sample of every running server (for /metrics)."""
        ...

    # Observed state, for the controller.

    def observe(self) -> dict:
        """`{"processes": [instance ids with a live server process], "directories": [instance ids with
        a data directory]}` on this driver's host(s)."""
        ...


# -- the edge: DNS and the proxy, each its own port -------------------------------------------------

#: The ownership mark on every DNS record and proxy entry the control plane creates (CONTRACT.md,
#: "Records that ZLH owns"): `comment` is exactly `zlh instance INSTANCE_ID`.
OWNERSHIP_PREFIX = "zlh instance "


def ownership_comment(instance_id: UUID | str) -> str:
    """The ownership mark of an instance's records: `zlh instance INSTANCE_ID`."""
    return f"{OWNERSHIP_PREFIX}{instance_id}"


def owner_of(mark: str | None) -> UUID | None:
    """The instance an ownership mark names; None for anything that is not exactly ZLH's mark."""
    if not isinstance(mark, str) or not mark.startswith(OWNERSHIP_PREFIX):
        return None
    try:
        return UUID(mark.removeprefix(OWNERSHIP_PREFIX))
    except ValueError:
        return None


class DnsProvider(Protocol):
    """Publishes game servers' records in one DNS zone (`ZLH_DNS`: the local file or Cloudflare).

    Records are Cloudflare-shaped dicts (`id`, `type`, `name`, `content`, `data`, `ttl`, `proxied`,
    `comment`, ...). Names are fully qualified and compare case-insensitively, without a trailing dot.

    Contract, for every method:
    - ownership: `comment` is the caller's mark (`ownership_comment(instance_id)`). A record of a type
      the call manages (SRV for `upsert_srv`, A/AAAA for `upsert_address`, SRV/A/AAAA for `remove`)
      whose comment is not exactly that mark is never changed or deleted: the call raises
      `DriverError("record_not_ours", ...)` before writing anything, so the controller can report a
      conflict. Records of other types at the same name are ignored.
    - idempotent by (name, type): an upsert updates our record in place (same id) or creates one;
      upserting what is already there writes nothing and returns the stored record; duplicates of
      ours under one name collapse into one.
    - failures raise `DriverError` with a stable `code` (`record_not_ours`, `edge_file_corrupt`,
      `cloudflare_error`, `cloudflare_unauthorized`, `cloudflare_rate_limited`, `cloudflare_unavailable`).
    """

    def upsert_srv(self, name: str, target: str, port: int, comment: str) -> dict:
        """Create or update the SRV record `name` (`_minecraft._tcp.HOST`) -> `target:port`; return it.

        `target` is a host name or an IP address. A provider that publishes real DNS cannot point
        an SRV record at an address: it then also upserts an A/AAAA record at HOST (the SRV name
        without its `_service._proto.` labels) with the same comment, and the SRV targets HOST.
        """
        ...

    def upsert_address(self, name: str, ip: str, comment: str) -> dict:
        """Create or update the A (IPv4) or AAAA (IPv6) record `name` -> `ip`; return it.

        Our record of the other address family at `name` is removed.
        """
        ...

    def remove(self, name: str, comment: str) -> bool:
        """Delete our SRV/A/AAAA records at `name` (and the address record `upsert_srv` made for it);
        return whether anything was deleted. Nothing there is `False`, not an error."""
        ...

    def list_records(self) -> list[dict]:
        """Every record in the zone, ours and others, as stored (observed state for the controller)."""
        ...


class ProxyRegistry(Protocol):
    """The game proxy's server map (`ZLH_PROXY`: the local file or Velocity's `velocity.toml`).

    An entry is `server name -> host:port` (Velocity's `[servers]`) plus, optionally, a forced host
    `NAME-SHORTID.ZONE -> [server]` (Velocity's `[forced-hosts]`), so players who connect through
    that host name land on that server.

    Contract, for every method:
    - ownership: `comment` is the caller's mark (`ownership_comment(instance_id)`); how it is stored
      is the adapter's business. A server entry or forced host without exactly that mark is never
      changed or removed: the call raises `DriverError("record_not_ours", ...)` before writing
      anything. So does an `unregister` that would leave an entry we do not own pointing at the
      removed server (a forced host or Velocity's `try` list).
    - idempotent: registering what is already there writes (and reloads) nothing; unregistering
      what is not there returns `False`.
    - server names and host names compare case-insensitively (Velocity lower-cases server names).
    - failures raise `DriverError` with a stable `code` (`record_not_ours`, `edge_file_corrupt`,
      `proxy_config_invalid`, `proxy_reload_failed`, `edge_io_error`).
    """

    def register(self, server: str, address: str, forced_host: str | None, comment: str) -> str:
        """Upsert `server -> address` and, unless None, the forced host `forced_host -> [server]`;
        our other forced hosts with this comment are removed. Return `address`."""
        ...

    def unregister(self, server: str, comment: str) -> bool:
        """Remove the server entry and our forced hosts for it; return whether anything was removed."""
        ...

    def list_servers(self) -> dict[str, str]:
        """Every server entry, ours and others: `server name -> host:port`."""
        ...

    def list_forced_hosts(self) -> dict[str, list[str]]:
        """Every forced host, ours and others: `host name -> [server names]`."""
        ...

    def list_owners(self) -> dict[str, str]:
        """The server entries that carry an ownership mark: `server name -> comment`."""
        ...


class StorageError(Exception):
    """Object storage failed or refused; `code` is stable (`not_found`, `offsite_failed`), the message is
    safe to show a customer (no credentials, no URL with a signature)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Upload:
    """A multipart upload begun by `ObjectStore.begin_upload`: part `n` is bytes `[(n-1)*part_size,
    n*part_size)` of the object, to be PUT to `parts[n-1]["url"]` by whoever holds the bytes."""

    key: str
    upload_id: str
    part_size: int
    parts: list[dict[str, Any]]


class ObjectStore(Protocol):
    """Named, immutable blobs: backup archives and support attachments, on local disk or S3.

    Contract (tests/contract/test_object_store.py runs it against every implementation):
    - keys are relative, `/`-separated, without `.`/`..` segments or a leading `/` (`ValueError` otherwise);
    - `put` is atomic (a reader sees all the bytes or `not_found`) and overwrites; `read` of a missing key
      raises `StorageError("not_found")`; `delete` is idempotent; `keys(prefix)` lists sorted;
    - `location` names where the bytes are (`local`, `s3`), as the API shows it.
    Stores that a node can write to directly (`direct` True) also presign: `begin_upload` + `complete_upload`
    (or `abort_upload`) for a multipart upload, `download_url` for a GET, each valid for one key only.
    """

    location: str
    direct: bool

    def put(self, key: str, data: bytes) -> None: ...

    def read(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, None if there is none."""
        ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> list[str]: ...

    def describe(self, key: str) -> str:
        """Where `key` is, for people and the log (`s3://bucket/prefix/key`, a path): never a secret."""
        ...

    def begin_upload(self, key: str, size: int, sha256: str) -> Upload: ...

    def complete_upload(self, upload: Upload, etags: list[dict[str, Any]], size: int) -> int:
        """Assemble the parts; `offsite_failed` unless the object now holds `size` bytes. Return its parts."""
        ...

    def abort_upload(self, upload: Upload) -> None: ...

    def download_url(self, key: str) -> str: ...
