"""The SFTP server: each server's files over SFTP (asyncssh), through the same use cases as the files API.

Runs in `zlh serve` (embedded mode, a thread with its own event loop) and as `zlh sftp` (its own
systemd unit, `ops/systemd/zlh-sftp.service`). It offers the SFTP subsystem only: no shell, no exec,
no forwarding.

Sign-in (services/sftp.py): the username is `EMAIL.SHORTID`; the password is the server's SFTP
password, or the client proves one of the account's SSH keys. Failed sign-ins count against the
client address in the same window as the API's failed authentications (`ZLH_AUTH_FAILURES_PER_MINUTE`,
key `auth-failures:ADDRESS`): each wrong password counts, and a connection that offered keys and
ended without signing in counts once. Over the limit, the connection is closed before anything is
checked. An open session checks every `RECHECK_SECONDS` that its account, server and credential
still allow it, and ends when they do not.

Files: every request goes through services/files.py (ownership, billing gate, path rules, activity
log) to the node agent, which resolves every path inside the instance's root, so nothing here touches
a local file. The agent's whole-file API shapes what a handle is: reading a file reads it whole,
a file opened for writing is built in memory (at most `MAX_WRITE_BYTES`, the files API's limit: one
byte more and the write fails, nothing written) and written atomically when it is closed. Errors map
to SFTP status codes with the agent's message (`bad_path` → permission denied, `not_found` → no
such file, `too_large` and `quota_exceeded` → failure/quota exceeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh import SFTPAttrs, SFTPName

from domain.errors import DomainError
from services import files
from services.infrastructure.files import create_private_file
from services.infrastructure.rate_limits import Windows
from services.infrastructure.store import ZLH
from services.ports import DriverError, InstanceDriver
from services.sftp import RECHECK_SECONDS, SftpGrant, sign_in_with_key, sign_in_with_password, still_allowed

log = logging.getLogger(__name__)

MAX_WRITE_BYTES = files.MAX_WRITE_BYTES
#: Files one session may hold open at once (each open for writing holds up to MAX_WRITE_BYTES in memory).
MAX_OPEN_FILES = 8
LOGIN_TIMEOUT = 60.0
GRANT = "zlh_grant"

_STATUS: dict[str, type[asyncssh.SFTPError]] = {
    "bad_path": asyncssh.SFTPPermissionDenied,
    "permission_denied": asyncssh.SFTPPermissionDenied,
    "billing_suspended": asyncssh.SFTPPermissionDenied,
    "not_found": asyncssh.SFTPNoSuchFile,
    "already_exists": asyncssh.SFTPFileAlreadyExists,
    "not_empty": asyncssh.SFTPDirNotEmpty,
    "not_a_directory": asyncssh.SFTPNotADirectory,
    "is_a_directory": asyncssh.SFTPFileIsADirectory,
    "quota_exceeded": asyncssh.SFTPQuotaExceeded,
}


def sftp_error(code: str, message: str) -> asyncssh.SFTPError:
    """The SFTP status for a driver or domain error code; the message keeps the code for the client."""
    return _STATUS.get(code, asyncssh.SFTPFailure)(f"{code}: {message}")


def load_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key, made (ed25519, 0600) on the first start if the file is missing."""
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="zlh sftp host key")
        if create_private_file(path, key.export_private_key("openssh").decode()):
            log.info("sftp: made a new host key in %s (%s)", path, key.get_fingerprint("sha256"))
    return asyncssh.read_private_key(str(path))


def host_key_fingerprint(path: Path) -> str | None:
    """The fingerprint of the host key in `path`, or None if this process cannot read it."""
    try:
        return asyncssh.read_private_key(str(path)).get_fingerprint("sha256")
    except (OSError, asyncssh.KeyImportError):
        return None


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class SftpContext:
    """What every connection needs: the store, the read models, the driver, the failure counters."""

    app: ZLH
    db: Any
    driver: Callable[[], InstanceDriver]
    windows: Windows
    failures_per_address: int
    recheck_seconds: float = RECHECK_SECONDS
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def refused(self, address: str) -> int | None:
        """Seconds to wait if `address` is over its failed sign-in limit, else None."""
        window = await self.run(self.windows.peek, f"auth-failures:{address}", self.failures_per_address)
        return window.retry_after if window.count >= self.failures_per_address else None

    async def failed(self, address: str) -> None:
        await self.run(self.windows.hit, f"auth-failures:{address}", self.failures_per_address)


class SignIn(asyncssh.SSHServer):
    """One connection's sign-in: a password or a public key, for `EMAIL.SHORTID`."""

    def __init__(self, context: SftpContext) -> None:
        self.context = context
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "unknown"
        self.pending: SftpGrant | None = None  # a credential checked out; a key still has to prove its signature
        self.grant: SftpGrant | None = None  # set once asyncssh has completed the sign-in
        self.offered_key = False

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.context.connections.add(conn)
        peer = conn.get_extra_info("peername")
        self.address = peer[0] if peer else "unknown"

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.context.connections.discard(self.conn)
        if self.grant is None and self.offered_key:
            task = asyncio.get_running_loop().create_task(self.context.failed(self.address))
            task.add_done_callback(lambda t: t.exception())  # never an unretrieved exception

    async def begin_auth(self, username: str) -> bool:
        wait = await self.context.refused(self.address)
        if wait is not None and self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                                 f"too many failed sign-ins from your address; try again in {wait} s")
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if await self.context.refused(self.address) is not None:
            return False
        self.offered_key = True
        grant = await self.context.run(sign_in_with_key, self.context.app, self.context.db, username, key)
        return self._accept(grant)

    async def validate_password(self, username: str, password: str) -> bool:
        if await self.context.refused(self.address) is not None:
            return False
        grant = await self.context.run(sign_in_with_password, self.context.app, self.context.db, username,
                                       password)
        if grant is None:
            await self.context.failed(self.address)
        return self._accept(grant)

    def _accept(self, grant: SftpGrant | None) -> bool:
        if grant is None:
            return False
        self.pending = grant
        return True

    def auth_completed(self) -> None:
        assert self.conn is not None and self.pending is not None
        self.grant = self.pending
        self.conn.set_extra_info(**{GRANT: self.grant})
        log.info("sftp: %s signed in to %s by %s from %s", self.grant.email, self.grant.instance_id,
                 self.grant.method, self.address)


@dataclass(eq=False)
class Handle:
    """An open file: its whole content (read at open, or built by writes and written at close)."""

    path: str
    data: bytearray
    writable: bool
    append: bool = False
    dirty: bool = False
    refused: asyncssh.SFTPError | None = None  # a write went over the limit: the close fails, nothing written
    closed: bool = field(default=False)


def _attrs(kind: str, size: int) -> SFTPAttrs:
    mode = (stat.S_IFDIR | 0o755) if kind == "dir" else (stat.S_IFREG | 0o644)
    return SFTPAttrs(type=asyncssh.FILEXFER_TYPE_DIRECTORY if kind == "dir" else asyncssh.FILEXFER_TYPE_REGULAR,
                     size=size, permissions=mode, uid=0, gid=0)


class InstanceFiles(asyncssh.SFTPServer):
    """One SFTP session on one server's files. Every method is overridden: nothing reaches this host's disk."""

    def __init__(self, chan: asyncssh.SSHServerChannel, context: SftpContext) -> None:
        super().__init__(chan)
        self.context = context
        grant = chan.get_connection().get_extra_info(GRANT)
        if grant is None:
            raise asyncssh.SFTPPermissionDenied("not signed in")
        self.grant: SftpGrant = grant
        self.checked_at = time.monotonic()
        self.open_files = 0

    # Plumbing.

    @staticmethod
    def _path(path: bytes) -> str:
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            raise asyncssh.SFTPInvalidFilename("bad_path: a path must be UTF-8") from None

    async def _recheck(self) -> None:
        if time.monotonic() - self.checked_at < self.context.recheck_seconds:
            return
        if not await self.context.run(still_allowed, self.context.app, self.grant):
            log.info("sftp: %s's session on %s ended: no longer allowed", self.grant.email, self.grant.instance_id)
            self.connection.disconnect(asyncssh.DISC_BY_APPLICATION, "your access to this server has ended")
            raise asyncssh.SFTPPermissionDenied("permission_denied: your access to this server has ended")
        self.checked_at = time.monotonic()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A use case of services/files.py on a worker thread, its errors as SFTP statuses."""
        await self._recheck()
        try:
            return await self.context.run(fn, self.context.app, self.context.driver(), self.grant.owner_id,
                                          self.grant.instance_id, *args)
        except DriverError as exc:
            raise sftp_error(exc.code, exc.message) from None
        except DomainError as exc:
            raise sftp_error(exc.code, exc.message) from None

    def _require_write(self) -> None:
        if not self.grant.can_write:
            raise asyncssh.SFTPPermissionDenied("permission_denied: you may read this server's files only")

    async def _lookup(self, path: str) -> SFTPAttrs:
        parts = self._parts(path)
        if not parts:
            return _attrs("dir", 0)
        entries = await self._call(files.list_files, "/" + "/".join(parts[:-1]))
        for entry in entries:
            if entry["name"] == parts[-1]:
                return _attrs(entry["type"], int(entry["size"]))
        raise asyncssh.SFTPNoSuchFile(f"not_found: {'/' + '/'.join(parts)!r} does not exist")

    @staticmethod
    def _parts(path: str) -> tuple[str, ...]:
        try:
            return files.normalize(path)
        except DriverError as exc:
            raise sftp_error(exc.code, exc.message) from None

    # Names and attributes.

    def realpath(self, path: bytes) -> bytes:
        """A lexical absolute form of `path` (`..` collapsed, never above `/`); the agent judges where it leads."""
        return posixpath.normpath("/" + self._path(path)).replace("//", "/").encode()

    async def stat(self, path: bytes) -> SFTPAttrs:
        return await self._lookup(self._path(path))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self._lookup(self._path(path))

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        assert isinstance(file_obj, Handle)
        return _attrs("file", len(file_obj.data))

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        """Times and modes are the node's to keep: accepted and ignored, once the path exists."""
        await self._lookup(self._path(path))

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._lookup(self._path(path))

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        return None

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        entries = await self._call(files.list_files, self._path(path))
        for name in (".", ".."):
            yield SFTPName(name.encode(), attrs=_attrs("dir", 0))
        for entry in entries:
            yield SFTPName(str(entry["name"]).encode(), attrs=_attrs(entry["type"], int(entry["size"])))

    # Files.

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> Handle:
        name = self._path(path)
        if self.open_files >= MAX_OPEN_FILES:
            raise asyncssh.SFTPFailure(f"too_many_open_files: at most {MAX_OPEN_FILES} files open at once")
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC))
        if not writing:
            data = await self._call(files.read_file, name)
            handle = Handle(name, bytearray(data), writable=False)
        else:
            self._require_write()
            handle = await self._open_for_writing(name, pflags)
        self.open_files += 1
        return handle

    async def _open_for_writing(self, name: str, pflags: int) -> Handle:
        if pflags & asyncssh.FXF_CREAT and pflags & asyncssh.FXF_TRUNC and not pflags & asyncssh.FXF_EXCL:
            self._parts(name)
            return Handle(name, bytearray(), writable=True, dirty=True)  # `put`: replace or create
        existing: bytes | None
        try:
            existing = await self._call(files.read_file, name)
        except asyncssh.SFTPNoSuchFile:
            existing = None
        if existing is not None and pflags & asyncssh.FXF_CREAT and pflags & asyncssh.FXF_EXCL:
            raise asyncssh.SFTPFileAlreadyExists(f"already_exists: {name!r} already exists")
        if existing is None and not pflags & asyncssh.FXF_CREAT:
            raise asyncssh.SFTPNoSuchFile(f"not_found: {name!r} does not exist")
        keep = existing is not None and not pflags & asyncssh.FXF_TRUNC
        return Handle(name, bytearray(existing if keep and existing else b""), writable=True,
                      append=bool(pflags & asyncssh.FXF_APPEND), dirty=existing is None or not keep)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, Handle)
        return bytes(file_obj.data[offset:offset + size])

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, Handle)
        if not file_obj.writable:
            raise asyncssh.SFTPPermissionDenied("permission_denied: the file is open for reading")
        if file_obj.refused is not None:
            raise file_obj.refused
        start = len(file_obj.data) if file_obj.append else offset
        end = start + len(data)
        if end > MAX_WRITE_BYTES:
            file_obj.refused = asyncssh.SFTPFailure(
                f"too_large: a file may hold at most {MAX_WRITE_BYTES} bytes; nothing was written")
            file_obj.data = bytearray()
            raise file_obj.refused
        if start > len(file_obj.data):
            file_obj.data.extend(b"\0" * (start - len(file_obj.data)))
        file_obj.data[start:end] = data
        file_obj.dirty = True
        return len(data)

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, Handle)
        if file_obj.closed:
            return
        file_obj.closed = True
        self.open_files -= 1
        if file_obj.refused is not None:
            raise file_obj.refused
        if file_obj.writable and file_obj.dirty:
            content, file_obj.data = bytes(file_obj.data), bytearray()
            await self._call(files.write_file, file_obj.path, content, self.grant.user_id)

    def fsync(self, file_obj: object) -> None:
        return None  # the write happens, atomically, at close

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    # Changes to the tree.

    async def remove(self, path: bytes) -> None:
        self._require_write()
        await self._call(files.delete_path, self._path(path), False, self.grant.user_id, "sftp")

    async def rmdir(self, path: bytes) -> None:
        self._require_write()
        await self._call(files.delete_path, self._path(path), True, self.grant.user_id, "sftp")

    async def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._require_write()
        await self._call(files.make_directory, self._path(path), self.grant.user_id, "sftp")

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._require_write()
        await self._call(files.rename_path, self._path(oldpath), self._path(newpath), False, self.grant.user_id,
                         "sftp")

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._require_write()
        await self._call(files.rename_path, self._path(oldpath), self._path(newpath), True, self.grant.user_id,
                         "sftp")

    # Not offered: links, file system statistics.

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPOpUnsupported("links are not supported")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("links are not supported")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPOpUnsupported("links are not supported")

    def statvfs(self, path: bytes) -> Any:
        raise asyncssh.SFTPOpUnsupported("file system statistics are not available")

    def fstatvfs(self, file_obj: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("file system statistics are not available")

    def exit(self) -> None:
        return None


class SftpServer:
    """The listener: `start()` in this event loop, or `start_in_thread()` with a loop of its own."""

    def __init__(self, context: SftpContext, host_key_path: Path, listen: str) -> None:
        self.context = context
        self.host_key_path = host_key_path
        self.host, self.port = split_address(listen)
        self._server: asyncssh.SSHAcceptor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; the bound (host, port)."""
        key = await self.context.run(load_host_key, self.host_key_path)
        self._server = await asyncssh.listen(
            self.host, self.port, server_host_keys=[key], server_factory=lambda: SignIn(self.context),
            sftp_factory=lambda chan: InstanceFiles(chan, self.context), allow_scp=False,
            login_timeout=LOGIN_TIMEOUT, agent_forwarding=False, x11_forwarding=False,
            allow_pty=False)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("sftp: listening on %s:%s (host key %s)", self.host, self.port, key.get_fingerprint("sha256"))
        return self.host, self.port

    def start_in_thread(self, timeout: float = 30.0) -> tuple[str, int]:
        """Run the server on its own event loop in a daemon thread; the bound (host, port)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="zlh-sftp", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the SFTP server did not start")
        if failure:
            raise failure[0]
        return self.host, self.port

    async def close(self) -> None:
        """Stop listening and end every open session."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in list(self.context.connections):
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    def stop(self) -> None:
        """Stop a server started with `start_in_thread`."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
