"""Safe access to an instance's files: every customer path is resolved inside the instance root.

A customer path is a `/`-separated string relative to the instance root; a
leading `/` means the root itself (`/` and `/server.properties` are fine). It is
`DriverError("bad_path")` if it holds a NUL byte, a `..` component, a component
over 255 bytes or is over 4,096 bytes in all (UTF-8, as Linux counts NAME_MAX and
PATH_MAX), or if the real path it names (symlinks followed, for the result and for
every existing parent) lies outside `realpath(root)`. A path that the file system
still finds too long (the root's own path counts there) is `bad_path` as well, never
an I/O error.

`normalize` is the pure, filesystem-free part (the fake driver uses it too);
`resolve_inside`, `list_dir`, `read_file`, `write_file`, `make_directory`, `delete_path` and
`rename_path` work on a real root (the last three act on an entry itself, never through a symlink).
Writes are atomic (a temp file in the same directory, fsync, `os.replace`),
create missing parent directories inside the root, and are refused above
`max_bytes` (`too_large`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from services.ports import DriverError

#: Largest file content a single write may carry.
MAX_WRITE_BYTES = 8 * 1024 * 1024
#: Longest customer path accepted, in bytes of UTF-8 (Linux's PATH_MAX).
MAX_PATH_BYTES = 4096
#: Longest path component accepted, in bytes of UTF-8 (Linux's NAME_MAX).
MAX_NAME_BYTES = 255


def normalize(path: str) -> tuple[str, ...]:
    """The components of a customer path relative to the root; `bad_path` if it cannot be one.

    Empty components and `.` are dropped (`/a//./b` is `("a", "b")`); `()` is the root.
    """
    if not isinstance(path, str):
        raise DriverError("bad_path", "a path must be a string")
    if "\0" in path:
        raise DriverError("bad_path", "a path must not contain NUL bytes")
    try:
        size = len(path.encode())
    except UnicodeEncodeError:
        raise DriverError("bad_path", "a path must be valid Unicode (no lone surrogates)") from None
    if size > MAX_PATH_BYTES:
        raise DriverError("bad_path", f"a path must be at most {MAX_PATH_BYTES} bytes of UTF-8, got {size}")
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    for part in parts:
        if len(part.encode()) > MAX_NAME_BYTES:
            raise DriverError("bad_path", f"a file or directory name must be at most {MAX_NAME_BYTES} bytes of "
                              f"UTF-8; {part[:32]!r}... has {len(part.encode())}")
    if ".." in parts:
        raise DriverError("bad_path", f"{path!r}: '..' is not allowed")
    return parts


def _io_error(exc: OSError, message: str) -> DriverError:
    """The driver error for a failed file system call: what the customer's path caused is theirs, not I/O."""
    if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        return DriverError("bad_path", f"{message} (the path is too long or loops)")
    if exc.errno == errno.ENOTDIR:
        return DriverError("not_a_directory", f"{message} (a parent is not a directory)")
    return DriverError("io_error", message)


def display(parts: tuple[str, ...]) -> str:
    """The canonical customer form of a path: `/` or `/a/b`."""
    return "/" + "/".join(parts)


def _inside(candidate: str, root_real: str) -> bool:
    return candidate == root_real or candidate.startswith(root_real.rstrip("/") + "/")


def resolve_inside(root: Path, path: str) -> Path:
    """The real path `path` names under `root`; `bad_path` if it (or a parent) escapes `root`.

    Symlinks are followed: a link inside the root to elsewhere inside the root is fine.
    The result need not exist.
    """
    parts = normalize(path)
    root_real = os.path.realpath(root)
    current = root_real
    for part in parts:
        current = os.path.join(current, part)
        if os.path.lexists(current):
            real = os.path.realpath(current)
            if not _inside(real, root_real):
                raise DriverError("bad_path", f"{display(parts)!r} leads outside the instance's files")
    real = os.path.realpath(current)
    if not _inside(real, root_real):
        raise DriverError("bad_path", f"{display(parts)!r} leads outside the instance's files")
    return Path(real)


def _require_root(root: Path) -> None:
    if not root.is_dir():
        raise DriverError("not_found", "the instance has no files directory")


def list_dir(root: Path, path: str) -> list[dict[str, object]]:
    """`[{"name", "type": "file"|"dir", "size"}]` of a directory, directories first, then by name.

    A symlink is listed as what it points to if that is inside the root; else as a
    file of size 0 (reading it is `bad_path`). Special files are listed as files.
    """
    normalize(path)
    _require_root(root)
    target = resolve_inside(root, path)
    root_real = os.path.realpath(root)
    try:
        st = target.stat()
    except FileNotFoundError as exc:
        raise DriverError("not_found", f"{display(normalize(path))!r} does not exist") from exc
    except OSError as exc:
        raise _io_error(exc, f"cannot list {display(normalize(path))!r}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise DriverError("not_a_directory", f"{display(normalize(path))!r} is not a directory")
    entries: list[dict[str, object]] = []
    try:
        with os.scandir(target) as it:
            for entry in it:
                kind, size = "file", 0
                with contextlib.suppress(OSError):
                    if entry.is_symlink() and not _inside(os.path.realpath(entry.path), root_real):
                        entries.append({"name": entry.name, "type": "file", "size": 0})
                        continue
                    est = entry.stat()
                    if stat.S_ISDIR(est.st_mode):
                        kind = "dir"
                    elif stat.S_ISREG(est.st_mode):
                        size = est.st_size
                entries.append({"name": entry.name, "type": kind, "size": size})
    except OSError as exc:
        raise _io_error(exc, f"cannot list {display(normalize(path))!r}: {exc.strerror}") from exc
    entries.sort(key=lambda e: (e["type"] != "dir", str(e["name"])))
    return entries


def read_file(root: Path, path: str) -> bytes:
    """The bytes of a regular file; `not_found`, `is_a_directory`, `bad_path`."""
    shown = display(normalize(path))
    _require_root(root)
    target = resolve_inside(root, path)
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise DriverError("not_found", f"{shown!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise DriverError("is_a_directory", f"{shown!r} is a directory") from exc
    except OSError as exc:
        raise _io_error(exc, f"cannot read {shown!r}: {exc.strerror}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise DriverError("is_a_directory", f"{shown!r} is a directory")
        raise DriverError("not_a_file", f"{shown!r} is not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError as exc:
            raise _io_error(exc, f"cannot read {shown!r}: {exc.strerror}") from exc


def write_file(root: Path, path: str, content: bytes, max_bytes: int = MAX_WRITE_BYTES) -> None:
    """Replace (or create) a file atomically, creating parent directories inside the root."""
    if len(content) > max_bytes:
        raise DriverError("too_large", f"a file may hold at most {max_bytes} bytes, got {len(content)}")
    parts = normalize(path)
    _require_root(root)
    if not parts:
        raise DriverError("is_a_directory", "'/' is a directory")
    shown = display(parts)
    target = resolve_inside(root, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise DriverError("not_a_directory", f"a parent of {shown!r} is not a directory") from exc
    except OSError as exc:
        raise _io_error(exc, f"cannot create the parents of {shown!r}: {exc.strerror}") from exc
    # Parents created just now could have raced with a symlink swap: check again.
    target = resolve_inside(root, path)
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _io_error(exc, f"cannot write {shown!r}: {exc.strerror}") from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DriverError("is_a_directory", f"{shown!r} is a directory")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:64]}.", suffix=".tmp")
    except OSError as exc:
        raise _io_error(exc, f"cannot write {shown!r}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _io_error(exc, f"cannot write {shown!r}: {exc.strerror}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def disk_usage(root: Path) -> int:
    """Bytes the files under `root` take: the apparent size of every regular file (symlinks not followed).

    What the disk quota counts; 0 when `root` does not exist.
    """
    total = 0
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def existing_size(root: Path, path: str) -> int:
    """The size of the regular file `path` names under `root` (0 if none): what a write there replaces."""
    try:
        st = resolve_inside(root, path).lstat()
    except (OSError, DriverError):
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0

def _entry_inside(root: Path, path: str) -> tuple[tuple[str, ...], Path]:
    """The components of `path` and the entry itself (not followed if it is a symlink) under its real parent.

    The parent is resolved inside the root as any path is; the last component is taken as it is, so
    removing or renaming a symlink acts on the link, never on what it points to. `/` is refused.
    """
    parts = normalize(path)
    _require_root(root)
    if not parts:
        raise DriverError("bad_path", "'/' is the instance's root: it cannot be removed, created or renamed")
    parent = resolve_inside(root, display(parts[:-1]))
    return parts, parent / parts[-1]


def make_directory(root: Path, path: str) -> None:
    """Create a directory (and missing parents) inside the root; `already_exists` if something is there."""
    parts, target = _entry_inside(root, path)
    shown = display(parts)
    if os.path.lexists(target):
        raise DriverError("already_exists", f"{shown!r} already exists")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        resolve_inside(root, display(parts[:-1]))  # created parents could have raced with a symlink swap
        target.mkdir()
    except FileExistsError as exc:
        raise DriverError("already_exists", f"{shown!r} already exists") from exc
    except NotADirectoryError as exc:
        raise DriverError("not_a_directory", f"a parent of {shown!r} is not a directory") from exc
    except OSError as exc:
        raise _io_error(exc, f"cannot create {shown!r}: {exc.strerror}") from exc


def delete_path(root: Path, path: str, directory: bool) -> None:
    """Remove a file or symlink (`directory` False) or an empty directory (`directory` True)."""
    parts, target = _entry_inside(root, path)
    shown = display(parts)
    try:
        st = os.lstat(target)
    except FileNotFoundError as exc:
        raise DriverError("not_found", f"{shown!r} does not exist") from exc
    except OSError as exc:
        raise _io_error(exc, f"cannot remove {shown!r}: {exc.strerror}") from exc
    is_dir = stat.S_ISDIR(st.st_mode)
    if directory and not is_dir:
        raise DriverError("not_a_directory", f"{shown!r} is not a directory")
    if not directory and is_dir:
        raise DriverError("is_a_directory", f"{shown!r} is a directory")
    try:
        os.rmdir(target) if directory else os.unlink(target)
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise DriverError("not_empty", f"{shown!r} is not empty") from exc
        raise _io_error(exc, f"cannot remove {shown!r}: {exc.strerror}") from exc


def rename_path(root: Path, source: str, target: str, overwrite: bool = False) -> None:
    """Move a file, symlink or directory to another path inside the root (the entry itself, links not followed).

    Without `overwrite`, an existing target is `already_exists`; with it, a file replaces a file atomically.
    Moving a directory into itself is `bad_path`.
    """
    src_parts, src = _entry_inside(root, source)
    dst_parts, dst = _entry_inside(root, target)
    shown = display(src_parts)
    if not os.path.lexists(src):
        raise DriverError("not_found", f"{shown!r} does not exist")
    if dst_parts[: len(src_parts)] == src_parts and dst_parts != src_parts:
        raise DriverError("bad_path", f"cannot move {shown!r} into itself")
    if os.path.lexists(dst) and not overwrite:
        raise DriverError("already_exists", f"{display(dst_parts)!r} already exists")
    if not dst.parent.is_dir():
        raise DriverError("not_found", f"the directory of {display(dst_parts)!r} does not exist")
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise DriverError("already_exists", f"{display(dst_parts)!r} already exists") from exc
        if exc.errno == errno.EISDIR:
            raise DriverError("is_a_directory", f"{display(dst_parts)!r} is a directory") from exc
        raise _io_error(exc, f"cannot move {shown!r}: {exc.strerror}") from exc
