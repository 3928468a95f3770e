"""Drive an ASGI app with one HTTP request whose body comes from a generator, counting what the app reads.

`TestClient` reads a generator body whole before the app sees it, so it cannot show that a server
refused a body without reading it; calling the app directly can.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawAnswer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    bytes_read: int = 0  # how much of the request body the app pulled
    chunks_read: int = 0

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def request(app: Any, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes],
            query: str = "") -> RawAnswer:
    """Send one request to `app` (ASGI) and return its answer and how much of `chunks` it read."""
    answer = RawAnswer()
    source = iter(chunks)

    async def receive() -> dict[str, Any]:
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        answer.bytes_read += len(chunk)
        answer.chunks_read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query.encode(),
        "headers": [(b"host", b"testserver")] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
    }
    asyncio.run(app(scope, receive, send))
    return answer


def megabytes(total: int, chunk: int = 1024 * 1024) -> Iterable[bytes]:
    """`total` bytes of `x`, `chunk` at a time, made only as they are pulled."""
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        sent += size
        yield b"x" * size
