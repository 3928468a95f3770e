"""Backups of an instance's files: `.tar.gz` archives under `DATA_DIR/backups/<backup_id>.tar.gz`.

- `create_backup` archives the files root (members relative to it; directories,
  regular files and symlinks that stay inside the root; FIFOs, devices and links
  leading outside are skipped, as they could not be restored safely) into a temp
  file in the backups directory, fsyncs it and renames it into place. It is
  idempotent: an existing archive is not rewritten, its manifest is returned.
  The manifest is derived from the archive itself: `size`, `sha256` (of the
  archive bytes), `created_at` (its mtime, RFC 3339 UTC) and `path`.
- `restore_backup` verifies the checksum first, then extracts into a sibling
  temp directory `<root>.restore-<random>` through `tarfile`'s `data` filter
  (links leading outside and devices refused), made stricter: absolute names
  and `..` are refused rather than stripped. Then it swaps: root ->
  `<root>.old-<random>`, extracted -> root, and removes the old tree. Any failure before the swap leaves
  the files untouched; a failure of the second rename puts the old tree back.
- `delete_backup` is idempotent.

Creating and deleting are serialized on `backups/.lock` (an `flock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from uuid import UUID

from services.infrastructure.files import file_lock
from services.ports import DriverError

CHUNK = 1024 * 1024


def archive_path(backups_dir: Path, backup_id: UUID) -> Path:
    """`backups/<backup_id>.tar.gz`."""
    return Path(backups_dir) / f"{UUID(str(backup_id))}.tar.gz"


def rfc3339(timestamp: float) -> str:
    """A POSIX timestamp as RFC 3339 UTC with a `Z`, microsecond precision."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sha256_of(f: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def manifest_of(path: Path) -> dict[str, Any]:
    """`{"size", "sha256", "created_at", "path"}` of an existing archive."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        sha = _sha256_of(f)
    return {"size": st.st_size, "sha256": sha, "created_at": rfc3339(st.st_mtime), "path": str(path)}


def _members(root: Path) -> list[tuple[Path, str]]:
    """`(absolute path, archive name)` for everything worth archiving, parents before children, sorted."""
    root_real = os.path.realpath(root)
    out: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            full = base / name
            arcname = full.relative_to(root).as_posix()
            try:
                st = full.lstat()
            except FileNotFoundError:
                continue  # vanished while walking
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                resolved = os.path.realpath(full)
                if os.path.isabs(target) or not (resolved == root_real or resolved.startswith(root_real + "/")):
                    continue
            elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue
            out.append((full, arcname))
    return out


def create_backup(files_root: Path, backups_dir: Path, backup_id: UUID) -> dict[str, Any]:
    """Archive `files_root` to `backups/<backup_id>.tar.gz` (idempotent); return its manifest."""
    files_root, backups_dir = Path(files_root), Path(backups_dir)
    target = archive_path(backups_dir, backup_id)
    if not files_root.is_dir():
        raise DriverError("not_found", "the instance has no files directory to back up")
    try:
        backups_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(backups_dir / ".lock"):
            if target.exists():
                return manifest_of(target)
            fd, tmp = tempfile.mkstemp(dir=backups_dir, prefix=f".{target.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as raw:
                    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
                        for full, arcname in _members(files_root):
                            with contextlib.suppress(FileNotFoundError):  # vanished since the walk
                                tar.add(full, arcname=arcname, recursive=False)
                    raw.flush()
                    os.fsync(raw.fileno())
                os.chmod(tmp, 0o640)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(backups_dir)
            return manifest_of(target)
    except (OSError, tarfile.TarError) as exc:
        raise DriverError("backup_failed", f"cannot archive the instance's files: {exc}") from exc


def restore_backup(files_root: Path, backups_dir: Path, backup_id: UUID, sha256: str,
                   prepare: Callable[[Path], None] | None = None) -> None:
    """Verify the archive against `sha256`, then replace `files_root` with its content atomically.

    `prepare(extracted)` runs on the extracted tree before the swap (the driver gives it to the instance's user).
    """
    files_root, backups_dir = Path(files_root), Path(backups_dir)
    source = archive_path(backups_dir, backup_id)
    try:
        f = source.open("rb")
    except FileNotFoundError as exc:
        raise DriverError("not_found", f"backup {backup_id} does not exist") from exc
    except OSError as exc:
        raise DriverError("io_error", f"cannot open backup {backup_id}: {exc.strerror}") from exc
    with f:
        actual = _sha256_of(f)
        if not hmac.compare_digest(actual, str(sha256).strip().lower()):
            raise DriverError("checksum_mismatch", f"backup {backup_id} does not match its recorded sha256")
        f.seek(0)
        parent = files_root.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=parent, prefix=f"{files_root.name}.restore-"))
        except OSError as exc:
            raise DriverError("io_error", f"cannot prepare the restore: {exc.strerror}") from exc
        try:
            # The archive we verified is the one we extract: same open file, read again from the start.
            with tarfile.open(fileobj=f, mode="r:gz") as tar:
                tar.extractall(staging, filter=_strict_filter)
            os.chmod(staging, 0o755)
            if prepare is not None:
                prepare(staging)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DriverError("bad_archive", f"backup {backup_id} cannot be extracted: {exc}") from exc
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _swap(files_root, staging)


def _strict_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """`tarfile`'s `data` filter, but absolute names and `..` are errors rather than stripped."""
    if member.name.startswith("/") or os.path.isabs(member.name):
        raise tarfile.AbsolutePathError(member)
    if ".." in PurePosixPath(member.name).parts:
        raise tarfile.OutsideDestinationError(member, member.name)
    return tarfile.data_filter(member, dest)


def _swap(files_root: Path, staging: Path) -> None:
    """root -> root.old-XXXX, staging -> root, remove the old tree; undo the first rename on failure."""
    old = files_root.with_name(f"{files_root.name}.old-{secrets.token_hex(6)}")
    had_root = files_root.exists()
    try:
        if had_root:
            os.rename(files_root, old)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DriverError("io_error", f"cannot move the current files aside: {exc.strerror}") from exc
    try:
        os.rename(staging, files_root)
    except OSError as exc:
        if had_root:
            os.rename(old, files_root)
        shutil.rmtree(staging, ignore_errors=True)
        raise DriverError("io_error", f"cannot put the restored files in place: {exc.strerror}") from exc
    with contextlib.suppress(OSError):
        _fsync_dir(files_root.parent)
    shutil.rmtree(old, ignore_errors=True)


def delete_backup(backups_dir: Path, backup_id: UUID) -> None:
    """Remove `backups/<backup_id>.tar.gz` if it exists."""
    backups_dir = Path(backups_dir)
    target = archive_path(backups_dir, backup_id)
    if not backups_dir.is_dir():
        return
    try:
        with file_lock(backups_dir / ".lock"):
            target.unlink(missing_ok=True)
    except OSError as exc:
        raise DriverError("io_error", f"cannot delete backup {backup_id}: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
