"""`FakeZammad`: the part of Zammad's REST API v1 the helpdesk sync uses, as an ASGI app.

Faithful to Zammad's documented shapes (docs.zammad.org, API → Tickets, Articles):
- token auth: `Authorization: Token token=SECRET` (else 401 `{"error": "Invalid token!"}`);
- `POST /api/v1/tickets` `{"title", "group", "customer_id": "guess:EMAIL" | "customer": EMAIL, "article": {...},
  "tags": "a,b", "state"?}` → 201 the ticket (`id`, `number` as a string from 31001 on, `state_id`, `group_id`,
  `customer_id`, `article_ids`, `created_at`, ...); the group must exist (else 422 `{"error": ...}`), an article is
  required; `guess:` finds or creates the customer;
- `GET /api/v1/tickets/ID` (`?expand=true` adds `state`, `group`, `customer` by name), `PUT` the same with
  `{"state"?, "title"?, "article"?}`; unknown ids 404 `{"error": "Couldn't find Ticket with 'id'=ID"}`;
- `GET /api/v1/tickets/search?query=&limit=` → `{"tickets": [ids], "tickets_count", "assets": {"Ticket": {...}}}`;
  the query supports `tags:VALUE` and words matched in title or number;
- `POST /api/v1/ticket_articles` `{"ticket_id", "body", "content_type", "type", "internal", "sender", "subject",
  "message_id", "attachments": [{"filename", "data" (base64), "mime-type"}]}` → 201 the article; `sender` is
  `Agent` unless given (the token is an agent's); `type` `note` unless given;
- `GET /api/v1/ticket_articles/by_ticket/ID` (`?expand=true`: `sender`, `type`, `created_by` by name) → a list;
- states: new(1), open(2), pending reminder(3), closed(4), merged(5), pending close(7); senders: Agent(1),
  Customer(2), System(3); types: email(1), phone(5), note(10), web(11).

Test helpers act as people in Zammad's UI: `agent_reply(ticket_id, body, internal=False)` (HTML, as the web UI
writes), `customer_email(ticket_id, body)`, `set_state(ticket_id, name)`; `fail_next(count, status)` makes the next
requests fail before anything is checked; `requests` logs (method, path, status).
"""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STATES = {"new": 1, "open": 2, "pending reminder": 3, "closed": 4, "merged": 5, "pending close": 7}
SENDERS = {"Agent": 1, "Customer": 2, "System": 3}
TYPES = {"email": 1, "phone": 5, "note": 10, "web": 11}
GROUPS = {"Users": 1, "2nd Level": 2}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class FakeZammad:
    def __init__(self, token: str = "zammad-test-token", agent: str = "agent@helpdesk.example") -> None:
        self.token = token
        self.agent = agent
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, dict[str, Any]] = {}
        self.tags: dict[int, list[str]] = {}
        self.users: dict[str, int] = {agent: 1}
        self.requests: list[tuple[str, str, int]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/api/v1/tickets", self.create_ticket, methods=["POST"]),
            Route("/api/v1/tickets/search", self.search, methods=["GET"]),
            Route("/api/v1/tickets/{id:int}", self.get_ticket, methods=["GET"]),
            Route("/api/v1/tickets/{id:int}", self.update_ticket, methods=["PUT"]),
            Route("/api/v1/ticket_articles", self.create_article, methods=["POST"]),
            Route("/api/v1/ticket_articles/by_ticket/{id:int}", self.by_ticket, methods=["GET"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status_box: dict[str, int] = {}

        async def logging_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            await JSONResponse({"error": "fault injected"}, status_code=failure)(scope, receive, logging_send)
        elif headers.get("authorization") != f"Token token={self.token}":
            await JSONResponse({"error": "Invalid token!"}, status_code=401)(scope, receive, logging_send)
        else:
            await self.app(scope, receive, logging_send)
        self.requests.append((scope["method"], scope["path"], status_box.get("status", 0)))

    # Fault injection and people in the UI.

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def agent_reply(self, ticket_id: int, body: str, internal: bool = False) -> dict[str, Any]:
        return self._article(ticket_id, {"body": f"<div>{body}</div>", "content_type": "text/html",
                                         "internal": internal, "sender": "Agent", "type": "note"}, self.agent)

    def customer_email(self, ticket_id: int, body: str) -> dict[str, Any]:
        customer = next(e for e, i in self.users.items() if i == self.tickets[ticket_id]["customer_id"])
        return self._article(ticket_id, {"body": body, "content_type": "text/plain", "internal": False,
                                         "sender": "Customer", "type": "email"}, customer)

    def set_state(self, ticket_id: int, state: str) -> None:
        self.tickets[ticket_id]["state_id"] = STATES[state]
        self.tickets[ticket_id]["updated_at"] = _now()  # as Zammad does on any change

    def by_tag(self, tag: str) -> list[dict[str, Any]]:
        return [t for i, t in self.tickets.items() if tag in self.tags.get(i, [])]

    def articles_of(self, ticket_id: int) -> list[dict[str, Any]]:
        return [a for a in self.articles.values() if a["ticket_id"] == ticket_id]

    # The API.

    @staticmethod
    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "error_human": message}, status_code=status)

    def _user(self, email: str) -> int:
        return self.users.setdefault(email.lower(), len(self.users) + 1)

    def _expand_ticket(self, t: dict[str, Any]) -> dict[str, Any]:
        state = next(n for n, i in STATES.items() if i == t["state_id"])
        group = next(n for n, i in GROUPS.items() if i == t["group_id"])
        customer = next(e for e, i in self.users.items() if i == t["customer_id"])
        return {**t, "state": state, "group": group, "customer": customer}

    def _article(self, ticket_id: int, body: dict[str, Any], author: str) -> dict[str, Any]:
        article_id = len(self.articles) + 1
        sender = body.get("sender") or "Agent"
        kind = body.get("type") or "note"
        attachments = []
        for n, a in enumerate(body.get("attachments") or [], start=1):
            data = base64.b64decode(a["data"])
            attachments.append({"id": article_id * 100 + n, "filename": a["filename"], "size": str(len(data)),
                                "preferences": {"Mime-Type": a.get("mime-type", "application/octet-stream")}})
        article = {
            "id": article_id, "ticket_id": ticket_id, "from": author, "to": "", "cc": "",
            "subject": body.get("subject"), "body": body.get("body", ""),
            "content_type": body.get("content_type", "text/html"), "message_id": body.get("message_id"),
            "internal": bool(body.get("internal", False)), "sender_id": SENDERS[sender], "type_id": TYPES[kind],
            "sender": sender, "type": kind, "created_by": author, "attachments": attachments,
            "created_at": _now(), "updated_at": _now(),
        }
        self.articles[article_id] = article
        ticket = self.tickets[ticket_id]
        ticket["article_ids"].insert(0, article_id)
        ticket["article_count"] = len(ticket["article_ids"])
        ticket["updated_at"] = _now()
        return article

    @staticmethod
    async def _json(request: Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def create_ticket(self, request: Request) -> JSONResponse:
        body = await self._json(request)
        if body is None:
            return self._error(422, "Unable to parse JSON")
        if not body.get("title"):
            return self._error(422, "Missing required attribute: title")
        if body.get("group") not in GROUPS:
            return self._error(422, f"No lookup value found for 'group': {body.get('group')!r}")
        customer = str(body.get("customer_id") or "")
        email = customer.removeprefix("guess:") if customer.startswith("guess:") else body.get("customer")
        if not email or "@" not in str(email):
            return self._error(422, "Missing required attribute: customer")
        article = body.get("article")
        if not isinstance(article, dict) or not article.get("body"):
            return self._error(422, "Need at least an article body")
        ticket_id = len(self.tickets) + 1
        self.tickets[ticket_id] = {
            "id": ticket_id, "number": str(31000 + ticket_id), "title": body["title"],
            "group_id": GROUPS[body["group"]], "state_id": STATES[body.get("state", "new")], "priority_id": 2,
            "customer_id": self._user(str(email)), "owner_id": 1, "article_ids": [], "article_count": 0,
            "created_at": _now(), "updated_at": _now(),
        }
        self.tags[ticket_id] = [t.strip() for t in str(body.get("tags") or "").split(",") if t.strip()]
        self._article(ticket_id, article, self.agent)
        return JSONResponse(self.tickets[ticket_id], status_code=201)

    async def get_ticket(self, request: Request) -> JSONResponse:
        ticket = self.tickets.get(request.path_params["id"])
        if ticket is None:
            return self._error(404, f"Couldn't find Ticket with 'id'={request.path_params['id']}")
        expand = request.query_params.get("expand") == "true"
        return JSONResponse(self._expand_ticket(ticket) if expand else ticket)

    async def update_ticket(self, request: Request) -> JSONResponse:
        ticket = self.tickets.get(request.path_params["id"])
        if ticket is None:
            return self._error(404, f"Couldn't find Ticket with 'id'={request.path_params['id']}")
        body = await self._json(request)
        if body is None:
            return self._error(422, "Unable to parse JSON")
        if "state" in body:
            if body["state"] not in STATES:
                return self._error(422, f"No lookup value found for 'state': {body['state']!r}")
            ticket["state_id"] = STATES[body["state"]]
        if "title" in body:
            ticket["title"] = body["title"]
        if isinstance(body.get("article"), dict):
            self._article(ticket["id"], body["article"], self.agent)
        ticket["updated_at"] = _now()
        return JSONResponse(ticket)

    async def search(self, request: Request) -> JSONResponse:
        query = request.query_params.get("query", "").strip()
        limit = int(request.query_params.get("limit", "10"))
        found = []
        for ticket_id, ticket in sorted(self.tickets.items(), reverse=True):
            if query.startswith("tags:"):
                hit = query.removeprefix("tags:").strip('"') in self.tags.get(ticket_id, [])
            else:
                words = query.lower().split()
                hit = all(w in ticket["title"].lower() or w == ticket["number"] for w in words)
            if hit:
                found.append(ticket)
        found = found[:limit]
        return JSONResponse({"tickets": [t["id"] for t in found], "tickets_count": len(found),
                             "assets": {"Ticket": {str(t["id"]): t for t in found}}})

    async def create_article(self, request: Request) -> JSONResponse:
        body = await self._json(request)
        if body is None:
            return self._error(422, "Unable to parse JSON")
        ticket_id = body.get("ticket_id")
        if ticket_id not in self.tickets:
            return self._error(422, "Need ticket_id")
        if not body.get("body"):
            return self._error(422, "Need at least an article body")
        if body.get("sender", "Agent") not in SENDERS or body.get("type", "note") not in TYPES:
            return self._error(422, "No lookup value found for sender or type")
        return JSONResponse(self._article(ticket_id, body, self.agent), status_code=201)

    async def by_ticket(self, request: Request) -> JSONResponse:
        ticket_id = request.path_params["id"]
        if ticket_id not in self.tickets:
            return self._error(404, f"Couldn't find Ticket with 'id'={ticket_id}")
        expand = request.query_params.get("expand") == "true"
        items = []
        for article in sorted(self.articles_of(ticket_id), key=lambda a: a["id"]):
            item = dict(article)
            if not expand:
                for name in ("sender", "type", "created_by"):
                    item.pop(name)
            items.append(item)
        return JSONResponse(items)
