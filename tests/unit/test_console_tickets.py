"""Console tickets are single-use, expire after 60 s, and are bound to one instance."""

from __future__ import annotations

from uuid import uuid4

from services.console import ConsoleTickets


def test_ticket_is_single_use_and_bound_to_its_instance() -> None:
    tickets = ConsoleTickets()
    instance, user = uuid4(), uuid4()
    token, ticket = tickets.issue(instance, user, now=1000.0)
    assert ticket.expires_at == 1060.0
    assert tickets.redeem(token, uuid4(), now=1001.0) is None  # another instance: and now it is spent
    token, _ = tickets.issue(instance, user, now=1000.0)
    assert tickets.redeem(token, instance, now=1001.0) is not None
    assert tickets.redeem(token, instance, now=1002.0) is None


def test_ticket_expires() -> None:
    tickets = ConsoleTickets()
    instance = uuid4()
    token, _ = tickets.issue(instance, uuid4(), now=1000.0)
    assert tickets.redeem(token, instance, now=1060.0) is None
