"""Use cases for the console: tickets, single-use, short-lived credentials for one console WebSocket.

The browser gets a ticket, never the node agent's address or secret. Tickets live
in this API process's memory (a restart invalidates them, which only means asking
for a new one); with several API processes, route console sockets to the process
that issued the ticket, or share tickets through Redis.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from uuid import UUID

TICKET_TTL = 60.0


@dataclass(frozen=True)
class Ticket:
    instance_id: UUID
    user_id: UUID
    expires_at: float  # wall-clock epoch seconds
    admin: bool = False  # an operator's ticket (their access is checked again when it is redeemed)


class ConsoleTickets:
    def __init__(self, ttl: float = TICKET_TTL) -> None:
        self.ttl = ttl
        self._tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def issue(self, instance_id: UUID, user_id: UUID, now: float | None = None,
              admin: bool = False) -> tuple[str, Ticket]:
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        ticket = Ticket(instance_id, user_id, now + self.ttl, admin)
        with self._lock:
            self._tickets = {k: t for k, t in self._tickets.items() if t.expires_at > now}
            self._tickets[token] = ticket
        return token, ticket

    def redeem(self, token: str, instance_id: UUID, now: float | None = None) -> Ticket | None:
        """The ticket if valid for this instance; it can never be used again either way."""
        now = time.time() if now is None else now
        with self._lock:
            ticket = self._tickets.pop(token, None)
        if ticket is None or ticket.expires_at <= now or ticket.instance_id != instance_id:
            return None
        return ticket
