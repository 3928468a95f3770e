"""A real S3 API for tests: moto's server mode (`moto[server]` from PyPI, `ThreadedMotoServer`) on a free
loopback port, one bucket per test. It speaks S3's wire protocol (SigV4 requests, multipart uploads,
presigned URLs), so boto3 and plain HTTP clients talk to it as to S3."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import boto3
from botocore.config import Config

ACCESS_KEY = "zlh-test-access"
SECRET_KEY = "zlh-test-secret"  # moto accepts any credentials
REGION = "us-east-1"


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto's S3 server in a thread on a free port; yield its base URL; stop it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@functools.cache
def client(endpoint: str) -> Any:
    """A boto3 client for the test server (one per endpoint: making one takes a while)."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))


@dataclass
class Bucket:
    endpoint: str
    name: str
    client: Any

    def settings(self, **more: Any) -> dict[str, Any]:
        """`Settings` overrides that send backups (and, with `attachments_store="s3"`, attachments) here."""
        return {"backup_s3_endpoint": self.endpoint, "backup_s3_bucket": self.name, "backup_s3_region": REGION,
                "backup_s3_access_key": ACCESS_KEY, "backup_s3_secret_key": SECRET_KEY, **more}

    def object_keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))

    def parts(self, key: str) -> int:
        """How many parts the object was uploaded in."""
        return int(self.client.head_object(Bucket=self.name, Key=key, PartNumber=1).get("PartsCount") or 1)

    def read(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def tamper(self, key: str) -> None:
        """Replace the object with other bytes of the same length (a flipped last byte)."""
        data = bytearray(self.read(key))
        data[-1] ^= 0xFF
        self.client.put_object(Bucket=self.name, Key=key, Body=bytes(data))


def new_bucket(endpoint: str) -> Bucket:
    s3 = client(endpoint)
    name = f"zlh-test-{uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return Bucket(endpoint, name, s3)
