"""Cursor pagination, the same for every list: `?limit=` (default 100, at most 500) and `?cursor=`.

A cursor is the sort key of the last item of the previous page, opaque to clients (base64url JSON);
`next_cursor` is null on the last page. A cursor that does not decode is 400 `bad_cursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

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


Page = tuple[list[dict[str, Any]], str | None]


def page(fetch: Callable[[int, tuple[str, str] | None], list[dict[str, Any]]], limit: int,
         cursor: str | None) -> Page:
    """One page of a read-model list sorted newest first by (created_at, id): its rows and `next_cursor`.

    `fetch(n, after)` returns up to `n` rows after the (created_at, id) key; one more than `limit` is asked
    for, so the last page says so (`next_cursor` null) without a second query.
    """
    after = (lambda keys: (keys[0], keys[1]))(decode_cursor(cursor, 2)) if cursor else None
    rows = fetch(limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more and rows else None


def page_of(items: Sequence[Any], limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    """One page of a short list computed whole (templates, queues, projections): the cursor is a position."""
    position = decode_cursor(cursor, 1)[0] if cursor else "0"
    if not position.isascii() or not position.isdigit() or len(position) > 9:
        raise Problem(400, "bad_cursor", "cursor is not a next_cursor of this list")
    start = int(position)
    end = start + limit
    return list(items[start:end]), encode_cursor(str(end)) if end < len(items) else None
