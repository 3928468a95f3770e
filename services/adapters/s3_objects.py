"""`S3ObjectStore`: the `ObjectStore` port on an S3-compatible bucket (AWS, MinIO, Ceph RGW, R2, moto), with boto3.

Keys live under `ZLH_BACKUP_S3_PREFIX` in `ZLH_BACKUP_S3_BUCKET`. Small blobs (attachments) go up with one
`PutObject`. Backup archives go up from the node that made them, as a multipart upload that the control plane
begins and completes: `begin_upload` creates it (the archive's sha256 as object metadata `sha256`) and presigns
one `UploadPart` URL per part, `complete_upload` assembles the parts and checks the object's size, and
`download_url` presigns a `GetObject` for a restore. Each URL is good for one key (and one upload) for
`url_ttl` seconds: the node never holds the bucket's credentials.

Errors come out as `StorageError("not_found" | "offsite_failed", message)`, the message naming the bucket and
key and S3's error code, never a credential or a signed URL. Incomplete multipart uploads of a worker that died
mid-upload are aborted by the bucket's lifecycle rule (README, "Offsite backups").
"""

from __future__ import annotations

import math
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.infrastructure.blobs import check_key
from services.ports import StorageError, Upload

#: S3's bounds on a multipart upload.
MIN_PART = 5 * 1024 * 1024
MAX_PART = 5 * 1024**3
MAX_PARTS = 10_000

#: One boto3 session for the process: it caches the service models, so a second client costs little. Making
#: clients from a session is not thread-safe, hence the lock (clients themselves are).
_SESSION = boto3.session.Session()
_SESSION_LOCK = threading.Lock()


class S3ObjectStore:
    """See the module docstring."""

    location = "s3"
    direct = True

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str = "us-east-1",
                 access_key: str | None = None, secret_key: str | None = None, prefix: str = "",
                 part_size: int = 64 * 1024 * 1024, url_ttl: float = 6 * 3600.0) -> None:
        if not MIN_PART <= part_size <= MAX_PART:
            raise ValueError(f"the part size must be between 5 MiB and 5 GiB, not {part_size} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = part_size
        self.url_ttl = int(url_ttl)
        self.endpoint_url = endpoint_url
        with _SESSION_LOCK:
            self.client = _SESSION.client(
                "s3", endpoint_url=endpoint_url or None, region_name=region, aws_access_key_id=access_key or None,
                aws_secret_access_key=secret_key or None,
                config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"},
                              s3={"addressing_style": "path" if endpoint_url else "auto"},
                              connect_timeout=10, read_timeout=120),
            )

    @classmethod
    def under(cls, store: S3ObjectStore, folder: str) -> S3ObjectStore:
        """The same bucket and client, with keys under `folder/` (attachments beside the backups)."""
        view = cls.__new__(cls)
        view.__dict__.update(store.__dict__)
        view.prefix = store.prefix + check_key(folder) + "/"
        return view

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.describe('')!r})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _error(self, exc: Exception, what: str, key: str) -> StorageError:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                return StorageError("not_found", f"no object {self.describe(key)}")
            return StorageError("offsite_failed", f"offsite storage refused to {what} {self.describe(key)}: "
                                                  f"{code or status}")
        return StorageError("offsite_failed", f"offsite storage cannot be reached to {what} "
                                              f"{self.describe(key)}: {type(exc).__name__}")

    # Small objects.

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "store", key) from exc

    def read(self, key: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "read", key) from exc

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, "look up", key)
            if error.code == "not_found":
                return None
            raise error from exc

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def parts(self, key: str) -> int:
        """How many parts the object was uploaded in (1 for a single PUT)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), PartNumber=1)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "look up", key) from exc
        return int(head.get("PartsCount") or 1)

    def metadata(self, key: str) -> dict[str, str]:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._key(key)).get("Metadata") or {})
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "look up", key) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, "delete", key)
            if error.code != "not_found":
                raise error from exc

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                        Prefix=self.prefix + prefix)
            for page in pages:
                found += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", prefix or ".") from exc
        return sorted(found)

    # Archives, moved by a node.

    def part_size_for(self, size: int) -> int:
        """The configured part size, grown when an archive would need more than S3's 10,000 parts."""
        return max(self.part_size, math.ceil(max(size, 1) / MAX_PARTS))

    def begin_upload(self, key: str, size: int, sha256: str) -> Upload:
        part_size = self.part_size_for(size)
        count = max(1, math.ceil(size / part_size))
        full = self._key(key)
        try:
            upload_id = str(self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, ContentType="application/gzip",
                Metadata={"sha256": sha256, "size": str(size)})["UploadId"])
            parts = [{"number": n, "url": self.client.generate_presigned_url(
                "upload_part", Params={"Bucket": self.bucket, "Key": full, "UploadId": upload_id, "PartNumber": n},
                ExpiresIn=self.url_ttl)} for n in range(1, count + 1)]
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "begin an upload of", key) from exc
        return Upload(key=key, upload_id=upload_id, part_size=part_size, parts=parts)

    def complete_upload(self, upload: Upload, etags: list[dict[str, Any]], size: int) -> int:
        parts = sorted(({"PartNumber": int(e["number"]), "ETag": str(e["etag"])} for e in etags),
                       key=lambda p: p["PartNumber"])
        if [p["PartNumber"] for p in parts] != list(range(1, len(upload.parts) + 1)):
            raise StorageError("offsite_failed", f"the node uploaded parts {[p['PartNumber'] for p in parts]} "
                                                 f"of {len(upload.parts)} to {self.describe(upload.key)}")
        try:
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self._key(upload.key),
                                                  UploadId=upload.upload_id, MultipartUpload={"Parts": parts})
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "complete the upload of", upload.key) from exc
        stored = self.size(upload.key)
        if stored != size:
            raise StorageError("offsite_failed", f"{self.describe(upload.key)} holds {stored} bytes after the "
                                                 f"upload, not the archive's {size}")
        return len(parts)

    def abort_upload(self, upload: Upload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(upload.key),
                                               UploadId=upload.upload_id)
        except (ClientError, BotoCoreError) as exc:
            error = self._error(exc, "abort the upload of", upload.key)
            if error.code != "not_found":
                raise error from exc

    def download_url(self, key: str) -> str:
        try:
            return str(self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=self.url_ttl))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "sign a download of", key) from exc
