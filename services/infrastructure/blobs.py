"""Blobs on local disk: `LocalObjectStore` (the `ObjectStore` port on a folder), `MemoryObjectStore` (its fake),
and `BlobStore`, the content-addressed store of support attachments and received mail over either of them
or over S3 (`services.adapters.s3_objects`).

`LocalObjectStore` writes each key to a temporary file in the same folder, fsyncs it and renames it into
place, so a reader sees the whole file or none. It cannot presign (`direct` is False): a node cannot
upload to it, and local backups stay on their node's disk instead (`services.agent.backups`).

`BlobStore` names each blob by the sha256 of its bytes (`ab/abcdef…`), so two writers of the same bytes
agree and the log can name a blob by hash; with `fallback`, a blob missing from the store is read from
another one (attachments written to local disk before the operator switched them to S3).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from services.infrastructure.files import atomic_write_bytes
from services.ports import ObjectStore, StorageError, Upload

_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_key(key: str) -> str:
    """`key` if it is a relative `/`-separated name without empty, `.` or `..` segments; else ValueError."""
    parts = str(key).split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise ValueError(f"not an object key: {key!r}")
    return key


class _CannotPresign:
    direct = False

    def begin_upload(self, key: str, size: int, sha256: str) -> Upload:
        raise StorageError("offsite_failed", f"{type(self).__name__} cannot take uploads from a node")

    def complete_upload(self, upload: Upload, etags: list[dict[str, Any]], size: int) -> int:
        raise StorageError("offsite_failed", f"{type(self).__name__} cannot take uploads from a node")

    def abort_upload(self, upload: Upload) -> None:
        return None

    def download_url(self, key: str) -> str:
        raise StorageError("offsite_failed", f"{type(self).__name__} cannot hand out download URLs")


class LocalObjectStore(_CannotPresign):
    """Objects as files under `root` (`root/KEY`)."""

    location = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / PurePosixPath(check_key(key))

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, 0o640)

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise StorageError("not_found", f"no object {key}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        path = self.path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not k.rsplit("/", 1)[-1].startswith("."))

    def describe(self, key: str) -> str:
        return str(self.path(key))


class MemoryObjectStore(_CannotPresign):
    """The fake: objects in a dict, with the same key rules."""

    location = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[check_key(key)] = bytes(data)

    def read(self, key: str) -> bytes:
        try:
            return self.objects[check_key(key)]
        except KeyError as exc:
            raise StorageError("not_found", f"no object {key}") from exc

    def exists(self, key: str) -> bool:
        return check_key(key) in self.objects

    def size(self, key: str) -> int | None:
        data = self.objects.get(check_key(key))
        return None if data is None else len(data)

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(check_key(key), None)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def describe(self, key: str) -> str:
        return f"memory:{check_key(key)}"


class BlobStore:
    """Content-addressed blobs (`ab/abcdef…`) over an `ObjectStore`: attachments and received mail.

    `BlobStore(path)` keeps them under a folder, as before; `BlobStore(store=…)` anywhere else.
    """

    def __init__(self, root: Path | None = None, *, store: ObjectStore | None = None,
                 fallback: ObjectStore | None = None) -> None:
        if store is None:
            if root is None:
                raise ValueError("BlobStore needs a folder or a store")
            store = LocalObjectStore(Path(root))
        self.store = store
        self.fallback = fallback
        #: The folder of a local store (None on S3).
        self.root: Path | None = store.root if isinstance(store, LocalObjectStore) else root

    @property
    def location(self) -> str:
        return self.store.location

    @staticmethod
    def key(sha256: str) -> str:
        if not _SHA256.fullmatch(sha256):
            raise ValueError("not a sha256 hex digest")
        return f"{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        """The file of a blob in a local store."""
        if not isinstance(self.store, LocalObjectStore):
            raise ValueError("this blob store is not on local disk")
        return self.store.path(self.key(sha256))

    def put(self, data: bytes) -> str:
        """Store `data` (once) and return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        key = self.key(digest)
        if self.store.size(key) != len(data):
            self.store.put(key, data)
        return digest

    def exists(self, sha256: str) -> bool:
        try:
            key = self.key(sha256)
        except ValueError:
            return False
        return self.store.exists(key) or (self.fallback is not None and self.fallback.exists(key))

    def read(self, sha256: str) -> bytes:
        key = self.key(sha256)
        try:
            return self.store.read(key)
        except StorageError as exc:
            if exc.code != "not_found" or self.fallback is None:
                raise
            return self.fallback.read(key)
