"""Use cases for support tickets: open (with a unique human number), reply, close."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.support import SupportTicket, TicketCounter
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.users import Principal


def open_ticket(app: ZLH, user: Principal, subject: str, message: str, instance_id: UUID | None,
                now: datetime | None = None) -> tuple[SupportTicket, int]:
    """Open a ticket numbered from today's counter; return it and its log position."""
    if instance_id is not None:
        load_instance(app, instance_id, user.id)  # another customer's instance is 404
    day = (now or datetime.now(UTC)).astimezone(UTC).date().isoformat()
    for _ in range(500):
        counter = app.find(TicketCounter.create_id(day), TicketCounter) or TicketCounter(day=day)
        number = counter.allocate()
        ticket = SupportTicket.open(number=number, owner_id=user.id, email=user.email, subject=subject,
                                    message=message, instance_id=instance_id)
        try:
            recordings = app.save(counter, ticket)
        except IntegrityError:
            continue  # another ticket took this number first: take the next one
        return ticket, recordings[-1].notification.id
    raise RuntimeError("could not allocate a ticket number under this much contention")


def load_ticket(app: ZLH, ticket_id: UUID, owner_id: UUID | None) -> SupportTicket:
    ticket = app.find(ticket_id, SupportTicket)
    if ticket is None or (owner_id is not None and ticket.owner_id != owner_id):
        raise NotFoundError("no such ticket")
    return ticket


def reply(app: ZLH, user: Principal, ticket_id: UUID, message: str) -> tuple[SupportTicket, int]:
    ticket = load_ticket(app, ticket_id, None if user.admin else user.id)
    ticket.reply(user.id, staff=user.admin and ticket.owner_id != user.id, message=message)
    return ticket, app.save(ticket)[-1].notification.id


def close(app: ZLH, user: Principal, ticket_id: UUID) -> tuple[SupportTicket, int]:
    ticket = load_ticket(app, ticket_id, None if user.admin else user.id)
    ticket.close(user.id)
    return ticket, app.save(ticket)[-1].notification.id
