"""The `ObjectStore` contract, run against the local folder, the in-memory fake and S3 (moto's server) alike;
then what only a presigning store does: multipart uploads by whoever holds the bytes, and verified downloads."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.adapters.s3_objects import S3ObjectStore
from services.agent import offsite
from services.infrastructure.blobs import BlobStore, LocalObjectStore, MemoryObjectStore
from services.ports import DriverError, ObjectStore, StorageError
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, Bucket

MiB = 1024 * 1024


def s3_store(bucket: Bucket, **kwargs: object) -> S3ObjectStore:
    return S3ObjectStore(bucket.name, endpoint_url=bucket.endpoint, region=REGION, access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, prefix="tenant-a", **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
    elif request.param == "memory":
        yield MemoryObjectStore()
    else:
        yield s3_store(request.getfixturevalue("s3_bucket"))


def test_put_read_overwrite_delete(store: ObjectStore) -> None:
    assert store.keys() == [] and not store.exists("a/b.bin") and store.size("a/b.bin") is None
    store.put("a/b.bin", b"first")
    assert store.read("a/b.bin") == b"first" and store.exists("a/b.bin") and store.size("a/b.bin") == 5
    store.put("a/b.bin", b"second!")
    assert store.read("a/b.bin") == b"second!" and store.size("a/b.bin") == 7
    store.put("a/c.bin", b"")
    store.put("z.bin", b"\x00\xff")
    assert store.keys() == ["a/b.bin", "a/c.bin", "z.bin"]
    assert store.keys("a/") == ["a/b.bin", "a/c.bin"]
    assert store.read("a/c.bin") == b""
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # idempotent
    store.delete("never/was")
    assert not store.exists("a/b.bin") and store.keys() == ["a/c.bin", "z.bin"]
    with pytest.raises(StorageError) as info:
        store.read("a/b.bin")
    assert info.value.code == "not_found"
    assert "a/b.bin" in store.describe("a/b.bin")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/.", "..", "a\x00b"])
def test_keys_that_could_escape_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x")
    with pytest.raises(ValueError):
        store.read(key)


def test_content_addressed_blobs_work_on_every_store(store: ObjectStore) -> None:
    """Support attachments and received mail (`BlobStore`) over each store: same bytes, same name, once."""
    blobs = BlobStore(store=store)
    data = os.urandom(2048)
    sha = blobs.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.put(data) == sha and store.keys() == [f"{sha[:2]}/{sha}"]
    assert blobs.exists(sha) and blobs.read(sha) == data
    assert not blobs.exists("0" * 64) and not blobs.exists("not-a-hash")
    with pytest.raises(StorageError):
        blobs.read("0" * 64)


def test_a_fallback_store_serves_blobs_kept_before_a_switch(store: ObjectStore, tmp_path: Path) -> None:
    before = BlobStore(tmp_path / "old")
    old = before.put(b"attached last year")
    blobs = BlobStore(store=store, fallback=LocalObjectStore(tmp_path / "old"))
    assert blobs.exists(old) and blobs.read(old) == b"attached last year"
    new = blobs.put(b"attached today")
    assert store.read(f"{new[:2]}/{new}") == b"attached today"


def test_only_s3_takes_uploads_from_a_node(store: ObjectStore) -> None:
    if store.direct:
        assert store.location == "s3"
        return
    with pytest.raises(StorageError) as info:
        store.begin_upload("backups/x.tar.gz", 10, "0" * 64)
    assert info.value.code == "offsite_failed"
    with pytest.raises(StorageError):
        store.download_url("backups/x.tar.gz")


# -- S3 only: multipart uploads over presigned URLs, verified downloads -------------------------------------


@pytest.fixture
def s3(s3_bucket: Bucket) -> S3ObjectStore:
    return s3_store(s3_bucket, part_size=5 * MiB)


def upload(s3: S3ObjectStore, key: str, data: bytes) -> int:
    """What a backup does: begin, the node PUTs the parts (the agent's code), complete."""
    up = s3.begin_upload(key, len(data), hashlib.sha256(data).hexdigest())
    etags = offsite.upload_parts(io.BytesIO(data), up.parts, up.part_size)
    return s3.complete_upload(up, etags, len(data))


def test_a_multipart_upload_by_the_node_lands_whole(s3: S3ObjectStore, s3_bucket: Bucket) -> None:
    data = os.urandom(11 * MiB + 123)
    up = s3.begin_upload("backups/i/b.tar.gz", len(data), hashlib.sha256(data).hexdigest())
    assert up.part_size == 5 * MiB and [p["number"] for p in up.parts] == [1, 2, 3]
    assert all("Signature" in p["url"] and SECRET_KEY not in p["url"] for p in up.parts)
    etags = offsite.upload_parts(io.BytesIO(data), up.parts, up.part_size)
    assert s3.complete_upload(up, etags, len(data)) == 3
    key = "tenant-a/backups/i/b.tar.gz"
    assert s3_bucket.object_keys() == [key] and s3_bucket.parts(key) == 3 and s3_bucket.read(key) == data
    assert s3.metadata("backups/i/b.tar.gz")["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_small_archive_is_one_part(s3: S3ObjectStore, s3_bucket: Bucket) -> None:
    assert upload(s3, "backups/small.tar.gz", b"tiny archive") == 1
    assert s3_bucket.read("tenant-a/backups/small.tar.gz") == b"tiny archive"


def test_a_missing_part_or_a_short_object_is_refused_and_can_be_aborted(s3: S3ObjectStore, s3_bucket: Bucket) -> None:
    data = os.urandom(6 * MiB)
    up = s3.begin_upload("backups/partial.tar.gz", len(data), hashlib.sha256(data).hexdigest())
    etags = offsite.upload_parts(io.BytesIO(data), up.parts[:1], up.part_size)
    with pytest.raises(StorageError) as info:
        s3.complete_upload(up, etags, len(data))
    assert info.value.code == "offsite_failed" and "parts [1] of 2" in info.value.message
    s3.abort_upload(up)
    s3.abort_upload(up)  # idempotent
    assert s3_bucket.object_keys() == []


def test_downloads_are_verified_against_the_recorded_sha256(s3: S3ObjectStore, s3_bucket: Bucket,
                                                            tmp_path: Path) -> None:
    data = os.urandom(64 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    upload(s3, "backups/v.tar.gz", data)
    target = tmp_path / "restore" / "v.tar.gz"
    offsite.download(s3.download_url("backups/v.tar.gz"), target, sha, "backup v")
    assert target.read_bytes() == data
    target.unlink()

    s3_bucket.tamper("tenant-a/backups/v.tar.gz")
    with pytest.raises(DriverError) as info:
        offsite.download(s3.download_url("backups/v.tar.gz"), target, sha, "backup v")
    assert info.value.code == "checksum_mismatch"
    assert "does not match the SHA-256" in info.value.message and "untouched" in info.value.message
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing left behind

    s3.delete("backups/v.tar.gz")
    with pytest.raises(DriverError) as info:
        offsite.download(s3.download_url("backups/v.tar.gz"), target, sha, "backup v")
    assert info.value.code == "not_found"


def test_errors_name_the_object_never_a_secret(s3_bucket: Bucket) -> None:
    wrong = S3ObjectStore("no-such-bucket-here", endpoint_url=s3_bucket.endpoint, region=REGION,
                          access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    with pytest.raises(StorageError) as info:
        wrong.put("a.bin", b"x")
    assert info.value.code == "offsite_failed" and "s3://no-such-bucket-here/a.bin" in info.value.message
    assert SECRET_KEY not in info.value.message and SECRET_KEY not in repr(wrong)
    unreachable = S3ObjectStore("b-unreachable", endpoint_url="http://127.0.0.1:9", region=REGION,
                                access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    unreachable.client.meta.config.retries = {"max_attempts": 1}
    with pytest.raises(StorageError) as info:
        unreachable.read("a.bin")
    assert info.value.code == "offsite_failed" and "cannot be reached" in info.value.message


def test_the_part_size_grows_for_huge_archives(s3: S3ObjectStore) -> None:
    assert s3.part_size_for(10) == 5 * MiB
    assert s3.part_size_for(100 * 1024**3) == -(-100 * 1024**3 // 10_000)
    with pytest.raises(ValueError):
        S3ObjectStore("b", part_size=MiB)
