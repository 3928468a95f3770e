"""Access control in the ASGI layer: authenticate a bearer token and apply the rate limits before any route.

Pure ASGI middleware, so a refused request costs no body parsing and no route work. For every
`/api/` request that carries `Authorization: Bearer …` it asks the `AccessGate` (services/access.py):
over a limit is 429 `rate_limited` with `Retry-After`; otherwise the decision (the caller, or None for
a token that is not valid) goes to the route in `scope["state"]["access"]`, where `api.deps` turns it
into 401/403 or the caller. Answers to such requests carry `RateLimit-Limit`, `RateLimit-Remaining` and
`RateLimit-Reset`: the token's window, or for a token that failed, the address's failure window.

The gate's work stays on the event loop when it needs no I/O (the token is in this process's cache and
the counters are this process's); otherwise it runs on a worker thread.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response
from services.access import Decision, token_id
from services.bootstrap import Container

log = logging.getLogger(__name__)


def bearer_token(scope: Scope) -> str | None:
    """The bearer token of a request, or None if it has no `Authorization: Bearer …` header."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class AccessMiddleware:
    def __init__(self, app: ASGIApp, container: Container) -> None:
        self.app = app
        self.container = container

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = bearer_token(scope) if scope["type"] == "http" and scope["path"].startswith("/api/") else None
        if token is None:
            await self.app(scope, receive, send)
            return
        gate = self.container.access
        tid = token_id(token)
        address = (scope.get("client") or ("unknown", 0))[0]
        try:
            if gate.needs_io(tid):
                decision = await run_in_threadpool(gate.check, tid, address)
            else:
                decision = gate.check(tid, address)
        except Exception:
            log.exception("access control failed")
            await problem_response(503, "unavailable", "authentication is briefly unavailable; retry",
                                   {"Retry-After": "5"})(scope, receive, send)
            return
        headers = decision.window.headers()
        if decision.refused:
            await self._refuse(decision, headers, scope, receive, send)
            return
        scope.setdefault("state", {})["access"] = decision
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    async def _refuse(decision: Decision, headers: dict[str, str], scope: Scope, receive: Receive,
                      send: Send) -> None:
        window = decision.window
        if decision.principal is None:
            detail = (f"too many failed authentications from your address ({window.limit} a minute); "
                      f"try again in {window.retry_after} s")
        else:
            detail = f"this token made more than {window.limit} requests this minute; try again in " \
                     f"{window.retry_after} s"
        response = problem_response(429, "rate_limited", detail, {**headers, "Retry-After": str(window.retry_after)},
                                    limit=window.limit, retry_after=window.retry_after)
        await response(scope, receive, send)
