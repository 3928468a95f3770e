"""Request body limits, enforced in the ASGI layer before routing, authentication or parsing.

`BodyLimit` is a pure ASGI middleware. It picks the limit of the request's route from its
method and path (file uploads 8 MiB, support attachments 10 MiB, the Stripe webhook 1 MiB, everything else
`ZLH_MAX_BODY`, 1 MiB by default), then:

- a `Content-Length` above the limit is answered 413 `too_large` at once, with
  `Connection: close`, before a byte of the body is read: a 48 MiB body without a token costs
  the server nothing but its headers;
- a body without a `Content-Length` (chunked) is counted as it is received; the moment it passes
  the limit, reading stops and the answer is 413 `too_large` (raised as an `HTTPException`, so the
  route, FastAPI's body parsing or a streaming upload all stop the same way).

A malformed `Content-Length` never gets here: the HTTP server refuses it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.security import SECURITY_HEADERS
from domain.attachment import MAX_ATTACHMENT_BYTES
from services import files
from services.problem_documents import PROBLEM_JSON, problem_document

KiB = 1024
MiB = 1024 * KiB

#: Largest file a customer may upload in one `PUT /api/instances/{id}/files/content` (8 MiB).
MAX_UPLOAD_BYTES = files.MAX_WRITE_BYTES
#: Largest support attachment in one `POST /api/support/attachments` (10 MiB).
MAX_ATTACHMENT_UPLOAD = MAX_ATTACHMENT_BYTES
#: Largest Stripe webhook body.
MAX_WEBHOOK_BYTES = 1 * MiB

_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")


@dataclass(frozen=True)
class Rule:
    """Requests with this method whose path fully matches `path` may carry at most `limit` bytes."""

    method: str
    path: re.Pattern[str]
    limit: int
    what: str


def default_rules() -> tuple[Rule, ...]:
    return (
        Rule("PUT", re.compile(r"/api/instances/[^/]+/files/content"), MAX_UPLOAD_BYTES, "file uploads"),
        Rule("POST", re.compile(r"/api/billing/stripe/webhook"), MAX_WEBHOOK_BYTES, "webhook bodies"),
        Rule("POST", re.compile(r"/api/support/attachments"), MAX_ATTACHMENT_UPLOAD, "attachments"),
    )


def describe(limit: int) -> str:
    """`1 MiB`, `512 KiB` or `1000 bytes`."""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


class BodyTooLargeError(HTTPException):
    """The body passed its limit while it was being read; the API answers 413 `too_large`."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, f"{what} are limited to {describe(limit)}", {"Connection": "close"})


class BodyLimit:
    """Pure ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp, max_body: int, rules: tuple[Rule, ...] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.rules = default_rules() if rules is None else rules

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        method, path = scope.get("method", ""), scope.get("path", "")
        for rule in self.rules:
            if rule.method == method and rule.path.fullmatch(path):
                return rule.limit, rule.what
        return self.max_body, "request bodies"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, what = self.limit_for(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and _CONTENT_LENGTH.fullmatch(value.strip()) and int(value) > limit:
                await _refuse(send, limit, what)
                return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit, what)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if started:
                raise
            await _refuse(send, limit, what)


async def _refuse(send: Send, limit: int, what: str) -> None:
    """Answer 413 `too_large` as problem JSON and close the connection (the rest of the body is never read)."""
    body = json.dumps(problem_document(413, "too_large", f"{what} are limited to {describe(limit)}")).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
