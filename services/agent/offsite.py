"""Moving a backup archive to and from offsite object storage, over URLs the control plane presigned.

Why the node moves the bytes itself: an archive can be gigabytes, and the node has it; streaming it through
the control plane would double the traffic and tie up an API process for the length of the upload. Why over
presigned URLs: the agent runs on other hosts (inside customers' containers with the `proxmox` driver), so it
gets no storage credentials at all, only, per operation, one URL per part (`UploadPart` of one multipart
upload of one key) or one `GetObject` URL, each expiring. The control plane begins and completes the upload.

- `upload_parts` PUTs part `n` (bytes `[(n-1)*part_size, n*part_size)`) to its URL and returns the ETags.
- `download` GETs an object to a file while hashing it, and refuses it (`checksum_mismatch`, file removed)
  unless its SHA-256 is the one the control plane recorded when the backup was made.

Errors never contain a URL (its query string is a signature): `offsite_failed` with the HTTP status.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from services.ports import DriverError

CHUNK = 1024 * 1024
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def _where(url: str) -> str:
    """`host/path` of a presigned URL, without its signature."""
    parsed = httpx.URL(url)
    return f"{parsed.host}{parsed.path}"


def upload_parts(source: BinaryIO, parts: list[dict[str, Any]], part_size: int,
                 client: httpx.Client | None = None) -> list[dict[str, Any]]:
    """PUT each part of `source` to its URL; `[{"number", "etag"}]`. `offsite_failed` on any refusal."""
    if part_size <= 0:
        raise DriverError("validation_error", "the part size must be positive")
    etags = []
    with contextlib.ExitStack() as stack:
        http = client or stack.enter_context(httpx.Client(timeout=TIMEOUT, trust_env=False))
        for part in sorted(parts, key=lambda p: int(p["number"])):
            number = int(part["number"])
            source.seek((number - 1) * part_size)
            body = source.read(part_size)
            if not body and number > 1:
                raise DriverError("offsite_failed", f"the archive has no part {number} of {part_size} bytes")
            try:
                response = http.put(str(part["url"]), content=body)
            except httpx.HTTPError as exc:
                raise DriverError("offsite_failed", f"part {number} could not be sent to "
                                                    f"{_where(part['url'])}: {type(exc).__name__}") from exc
            etag = response.headers.get("etag")
            if not response.is_success or not etag:
                raise DriverError("offsite_failed", f"offsite storage refused part {number} of the archive "
                                                    f"(HTTP {response.status_code})")
            etags.append({"number": number, "etag": etag})
    return etags


def download(url: str, target: Path, sha256: str, what: str, client: httpx.Client | None = None) -> None:
    """Fetch `url` into `target` (atomically, fsynced) if its bytes hash to `sha256`.

    A mismatch raises `checksum_mismatch` and leaves nothing behind; `what` names the backup in messages.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".download")
    try:
        with os.fdopen(fd, "wb") as out:
            actual = fetch(url, out, what, client)
            out.flush()
            os.fsync(out.fileno())
        check(actual, sha256, what)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check(actual: str, sha256: str, what: str) -> None:
    """`checksum_mismatch` unless the received bytes' digest `actual` is the recorded `sha256`."""
    expected = str(sha256).strip().lower()
    if not hmac.compare_digest(actual, expected):
        raise DriverError("checksum_mismatch", f"the offsite copy of {what} does not match the SHA-256 recorded "
                                               f"when it was made (expected {expected}, got {actual}); nothing "
                                               "was restored and the server's files are untouched")


def fetch(url: str, out: BinaryIO, what: str, client: httpx.Client | None = None) -> str:
    """Stream `url` into `out`; return the sha256 hex digest of what was received."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        http = client or stack.enter_context(httpx.Client(timeout=TIMEOUT, trust_env=False))
        try:
            with http.stream("GET", url) as response:
                if response.status_code == 404:
                    raise DriverError("not_found", f"the offsite copy of {what} does not exist")
                if not response.is_success:
                    raise DriverError("offsite_failed", f"offsite storage refused to send {what} "
                                                        f"(HTTP {response.status_code})")
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise DriverError("offsite_failed", f"{what} could not be fetched from {_where(url)}: "
                                                f"{type(exc).__name__}") from exc
    return digest.hexdigest()
