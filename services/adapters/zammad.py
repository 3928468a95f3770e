"""Zammad's REST API (v1), the part the helpdesk sync uses: tickets, articles, states, tag search.

`ZLH_HELPDESK_URL` is Zammad's base URL (`https://helpdesk.example.com`); `ZLH_HELPDESK_TOKEN` an access
token of an agent with `ticket.agent` on `ZLH_HELPDESK_GROUP`, sent as `Authorization: Token token=…`.

- `POST /api/v1/tickets` creates a ticket for `customer_id: "guess:EMAIL"` (Zammad finds or creates the
  customer) with its first article, tagged with our ticket number (`tags`) and titled `[NUMBER] subject`:
  our number is stored on theirs, and `GET /api/v1/tickets/search?query=tags:NUMBER` finds it again;
- `POST /api/v1/ticket_articles` adds a message (`type: note`, `internal` for our internal notes, `sender`
  Customer or Agent, our `message_id`, attachments as base64), so Zammad sends no email of its own;
- `GET /api/v1/ticket_articles/by_ticket/ID?expand=true` lists a ticket's articles (with `sender` and
  `type` by name), `GET /api/v1/tickets/ID?expand=true` its state by name, `PUT /api/v1/tickets/ID`
  changes the state.

Errors: connection failures, timeouts, 429 and 5xx are `HelpdeskUnavailableError` (a `ConnectionError`:
the sync pauses and tries again, it never gives up on an event for an outage); any other 4xx is a
`HelpdeskError` (the event is tried a few times, then kept as a dead letter staff can retry).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx


class HelpdeskError(Exception):
    """The helpdesk refused a request (a 4xx other than 429)."""


class HelpdeskUnavailableError(ConnectionError):
    """The helpdesk could not be reached or answered 429/5xx: try again later."""


class ZammadClient:
    system = "zammad"

    def __init__(self, url: str, token: str, group: str = "Users", timeout: float = 15.0,
                 client: httpx.Client | None = None) -> None:
        self.base = url.rstrip("/")
        self.group = group
        self.http = client or httpx.Client(timeout=timeout)
        self.headers = {"Authorization": f"Token token={token}", "Accept": "application/json"}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, f"{self.base}{path}", headers=self.headers, **kwargs)
        except httpx.HTTPError as exc:
            raise HelpdeskUnavailableError(f"zammad {method} {path}: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise HelpdeskUnavailableError(f"zammad {method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise HelpdeskError(f"zammad {method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def find_ticket(self, number: str) -> dict[str, Any] | None:
        """Our ticket on Zammad, found by its tag (our number)."""
        body = self._call("GET", "/api/v1/tickets/search", params={"query": f"tags:{number}", "limit": 10})
        tickets = (body.get("assets") or {}).get("Ticket") or {}
        for ticket_id in body.get("tickets") or []:
            ticket = tickets.get(str(ticket_id))
            if ticket is not None and ticket.get("title", "").startswith(f"[{number}]"):
                return ticket
        return None

    def create_ticket(self, number: str, subject: str, customer_email: str, body: str, message_id: str,
                      attachments: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/tickets", json={
            "title": f"[{number}] {subject}", "group": self.group, "customer_id": f"guess:{customer_email}",
            "tags": number,
            "article": {"subject": subject, "body": body, "content_type": "text/plain", "type": "note",
                        "internal": False, "sender": "Customer", "message_id": message_id,
                        "attachments": attachments},
        })

    def articles(self, ticket_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"/api/v1/ticket_articles/by_ticket/{ticket_id}", params={"expand": "true"}))

    def create_article(self, ticket_id: str, body: str, internal: bool, sender: str, message_id: str,
                       attachments: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/ticket_articles", json={
            "ticket_id": int(ticket_id), "body": body, "content_type": "text/plain", "type": "note",
            "internal": internal, "sender": sender, "message_id": message_id, "attachments": attachments})

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/v1/tickets/{ticket_id}", params={"expand": "true"})

    def set_state(self, ticket_id: str, state: str) -> None:
        self._call("PUT", f"/api/v1/tickets/{ticket_id}", json={"state": state})

    @staticmethod
    def attachment(name: str, data: bytes, content_type: str) -> dict[str, Any]:
        return {"filename": name, "data": base64.b64encode(data).decode(), "mime-type": content_type}

    def close(self) -> None:
        self.http.close()
