"""Attachments on support tickets: what the bytes are, what a file may be called, and uploads.

The content type of an attachment is never taken from the client (a browser's or a mail
client's `Content-Type` says what the sender believes, or pretends): `sniff` reads it from
the bytes with a small magic-number table. `classify` then compares it with what the file
name promises:

- a name whose extension this table knows (`.png`, `.pdf`, `.zip`, `.log`, ...) must hold
  bytes of that kind; an executable named `.png`, a zip named `.txt` or a binary named
  `.log` is *disguised* and refused (`AttachmentRefusedError`, code `attachment_disguised`):
  nothing is stored, and the sender is told why;
- any other name is accepted, and the stored type is the sniffed one, or
  `application/octet-stream` when the bytes match nothing known (so an honest `server.jar` or
  `world.mca` is kept, and never served as something a browser would run).

Every attachment is served with `Content-Disposition: attachment` and `nosniff` whatever its
type, so even an accepted file is downloaded, never rendered.

`SupportUpload` records one file a user uploaded through the portal (the bytes are in the
content-addressed store under their sha256); a ticket or reply then names uploads by id, and
only the uploader may name theirs.
"""

from __future__ import annotations

import re
import unicodedata
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive
from domain.text import check_text

#: The largest attachment (portal or email), in bytes.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Attachments one message may carry.
MAX_ATTACHMENTS_PER_MESSAGE = 10

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"

#: (offset, magic bytes, content type); the first match wins.
MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),  # an empty zip
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (257, b"ustar", "application/x-tar"),
    (0, b"\x28\xb5\x2f\xfd", "application/zstd"),
    # Executables: accepted only under a name that does not promise something else.
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"MZ", "application/x-msdownload"),
    (0, b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xce\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\xca\xfe\xba\xbe", "application/java-vm"),  # a Java class file (or a fat Mach-O)
    (0, b"#!", "text/x-script"),
)

_WEBP = (b"RIFF", b"WEBP")

#: What a name's extension promises. Text-like names promise text; an unknown extension promises nothing.
EXTENSIONS: dict[str, frozenset[str]] = {
    **{ext: frozenset({"image/png"}) for ext in ("png",)},
    **{ext: frozenset({"image/jpeg"}) for ext in ("jpg", "jpeg")},
    "gif": frozenset({"image/gif"}),
    "webp": frozenset({"image/webp"}),
    "pdf": frozenset({"application/pdf"}),
    **{ext: frozenset({"application/zip"}) for ext in ("zip", "jar", "mrpack", "docx", "xlsx", "odt")},
    **{ext: frozenset({"application/gzip"}) for ext in ("gz", "tgz")},
    "tar": frozenset({"application/x-tar"}),
    "7z": frozenset({"application/x-7z-compressed"}),
    "rar": frozenset({"application/vnd.rar"}),
    "xz": frozenset({"application/x-xz"}),
    "bz2": frozenset({"application/x-bzip2"}),
    "zst": frozenset({"application/zstd"}),
    **{ext: frozenset({TEXT}) for ext in ("txt", "log", "md", "csv", "json", "yml", "yaml", "toml", "properties",
                                          "cfg", "conf", "ini", "xml", "html", "htm", "svg", "js", "css")},
}

_DISGUISE_HINT = "name the file for what it is (or zip it) and send it again"


class AttachmentRefusedError(DomainError):
    """An attachment that is not stored: disguised as another kind of file, too large, or empty."""

    code = "attachment_refused"


class AttachmentDisguisedError(AttachmentRefusedError):
    code = "attachment_disguised"


class AttachmentTooLargeError(AttachmentRefusedError):
    code = "too_large"


def _is_text(data: bytes) -> bool:
    """No NUL and no control characters but tab, LF, CR, FF and ESC, in UTF-8 (or any 8-bit text)."""
    sample = data[:65536]
    if b"\x00" in sample:
        return False
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))
    return controls == 0


def sniff(data: bytes) -> str:
    """The content type the bytes show; `text/plain` for text, `application/octet-stream` for unknown bytes."""
    for offset, magic, kind in MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return kind
    if data[:4] == _WEBP[0] and data[8:12] == _WEBP[1]:
        return "image/webp"
    if data and _is_text(data):
        return TEXT
    return OCTET_STREAM


def extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.strip(".") else ""


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f/\\:*?\"<>|]+")


def safe_name(name: str | None) -> str:
    """A file name fit to store and to offer in `Content-Disposition`: no path, no control characters,
    at most 120 characters (the extension kept), never empty or a dot name."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if not ("\ud800" <= ch <= "\udfff"))
    text = _UNSAFE_NAME.sub("_", text).strip().strip(".")
    if not text:
        return "attachment"
    if len(text) > 120:
        ext = extension(text)
        keep = 120 - (len(ext) + 1 if ext and len(ext) < 16 else 0)
        text = text[:keep] + (f".{ext}" if ext and len(ext) < 16 else "")
    return text


def classify(name: str, data: bytes) -> str:
    """The content type to store `data` under as `name`, or `AttachmentRefusedError` (see the module)."""
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise AttachmentTooLargeError(f"{name}: attachments are limited to 10 MiB ({len(data)} bytes)")
    if not data:
        raise AttachmentRefusedError(f"{name}: the file is empty")
    sniffed = sniff(data)
    promised = EXTENSIONS.get(extension(name))
    if promised is not None and sniffed not in promised:
        what = "text" if promised == {TEXT} else "/".join(sorted(promised))
        shown = "an executable" if sniffed.startswith(("application/x-exec", "application/x-msdownload",
                                                         "application/x-mach")) else sniffed
        raise AttachmentDisguisedError(f"{name}: the name promises {what} but the content is {shown}; "
                                       f"{_DISGUISE_HINT}")
    return sniffed


def attachment(sha256: str, name: str, size: int, content_type: str) -> dict[str, object]:
    return {"sha256": sha256, "name": name, "size": size, "content_type": content_type}


class SupportUpload(Aggregate):
    """A file one user uploaded for a ticket message; the id derives from (user, content, name)."""

    TOPIC = "zlh.SupportUpload"

    class Event(Aggregate.Event):
        TOPIC = "zlh.SupportUpload.Event"

    class Uploaded(Event, Aggregate.Created):
        TOPIC = "zlh.SupportUpload.Uploaded"
        owner_id: UUID
        sha256: str
        name: str
        size: int
        content_type: str

    @staticmethod
    def create_id(owner_id: UUID, sha256: str, name: str) -> UUID:
        return derive("support-upload", owner_id, sha256, name)

    @classmethod
    def record(cls, owner_id: UUID, sha256: str, name: str, size: int, content_type: str) -> SupportUpload:
        check_text("name", name)
        return cls(owner_id=owner_id, sha256=sha256, name=name, size=size, content_type=content_type)

    @event(Uploaded)
    def __init__(self, owner_id: UUID, sha256: str, name: str, size: int, content_type: str) -> None:
        self.owner_id = owner_id
        self.sha256 = sha256
        self.name = name
        self.size = size
        self.content_type = content_type

    def as_attachment(self) -> dict[str, object]:
        return attachment(self.sha256, self.name, self.size, self.content_type)
