"""What may be stored as text or as a timestamp: the rules every read model can hold.

Free text (subjects, messages, titles, bodies, notes, names, emails) may hold any
Unicode character but NUL, the other C0 and C1 control characters (tab, LF and CR
are fine), and lone surrogates: PostgreSQL's TEXT cannot hold NUL, UTF-8 cannot
encode a lone surrogate, and neither belongs in what a person reads.

Timestamps must carry a timezone and lie between 1970-01-01T00:00:00Z and
9999-12-30T23:59:59Z once converted to UTC, so that any timezone shift a read model
or a client applies still gives a valid year (9999-12-31T23:59:59-14:00 is in year
10000 in UTC).

The API checks the same rules at the boundary (api/schemas.py `FreeText`,
`Timestamp`); the commands that store text check them again here, so nothing reaches
the log through another path (the CLI, a worker). A violation is a
`TextValidationError` (code `validation_error`) that names the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from domain.errors import DomainError

#: C0 controls but tab, LF and CR; DEL and the C1 controls; every surrogate code point.
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)


class TextValidationError(DomainError):
    """A text or timestamp that no read model could hold, or that no person should read."""

    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as free text, or None when it can."""
    match = FORBIDDEN.search(value)
    if match is None:
        return None
    char = match.group()
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"must not contain {what} (U+{ord(char):04X} at position {match.start()}); tab, LF and CR are allowed"


def check_text(field: str, value: str | None) -> None:
    """`TextValidationError` naming `field` unless `value` is storable free text (None passes)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TextValidationError(field, "must be a string")
    problem = text_problem(value)
    if problem is not None:
        raise TextValidationError(field, problem)


def timestamp_problem(value: datetime) -> str | None:
    """Why `value` cannot be stored as a timestamp, or None when it can."""
    if value.tzinfo is None or value.utcoffset() is None:
        return "needs a timezone (RFC 3339, e.g. 2030-01-01T00:00:00Z)"
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return "is out of range: it must be between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"
    if not EARLIEST <= utc <= LATEST:
        return "is out of range: it must be between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z"
    return None


def check_timestamp(field: str, value: datetime | None) -> None:
    """`TextValidationError` naming `field` unless `value` is an aware datetime within the bounds (None passes)."""
    if value is None:
        return
    if not isinstance(value, datetime):
        raise TextValidationError(field, "must be a datetime")
    problem = timestamp_problem(value)
    if problem is not None:
        raise TextValidationError(field, problem)


def check_epoch_seconds(field: str, value: object) -> datetime:
    """The UTC datetime of a whole number of Unix seconds within the bounds; else `TextValidationError`.

    Booleans and floats are refused: JSON `true` and `1e20` are not timestamps.
    """
    if type(value) is not int:
        raise TextValidationError(field, "must be a whole number of seconds since 1970-01-01T00:00:00Z")
    if not EARLIEST.timestamp() <= value <= LATEST.timestamp():
        raise TextValidationError(field, "is out of range: it must be between 1970-01-01T00:00:00Z and "
                                         "9999-12-30T23:59:59Z")
    return datetime.fromtimestamp(value, UTC)
