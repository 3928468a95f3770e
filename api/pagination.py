"""Cursor pagination, the same for every list: `?limit=` (default 100, at most 500) and `?cursor=`.

A cursor is the sort key of the last item of the previous page, opaque to clients (base64url JSON);
`next_cursor` is null on the last page. A cursor that does not decode is 400 `bad_cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated

from fastapi import Query

from api.problems import Problem

LimitQuery = Annotated[int, Query(ge=1, le=500, description="items per page (default 100, at most 500)")]
CursorQuery = Annotated[str | None, Query(max_length=512, description="the previous page's `next_cursor`")]


def encode_cursor(*keys: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(keys).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str]:
    """The sort key a cursor carries; 400 `bad_cursor` if it is not one of ours."""
    try:
        keys = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        keys = None
    if not isinstance(keys, list) or len(keys) != parts or not all(isinstance(k, str) for k in keys):
        raise Problem(400, "bad_cursor", "cursor is not a next_cursor of this list")
    return keys
