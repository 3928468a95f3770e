"""Use cases for support tickets: open (with a unique human number), reply, close.

Opening a ticket saves, in one transaction, the day's `TicketCounter` (the number), the ticket,
and the customer's tickets `Quota` for that UTC day, so neither the numbers nor the daily quota
can be overshot by concurrent requests. The quota is checked before a number is taken.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.support import SupportTicket, TicketCounter, TicketsExhaustedError
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.quotas import UNLIMITED, Quotas
from services.users import Principal


def open_ticket(app: ZLH, user: Principal, subject: str, message: str, instance_id: UUID | None,
                now: datetime | None = None, quotas: Quotas = UNLIMITED) -> tuple[SupportTicket, int]:
    """Open a ticket numbered from today's counter; return it and its log position."""
    if instance_id is not None:
        load_instance(app, instance_id, user.id)  # another customer's instance is 404
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    day = moment.date().isoformat()
    for _ in range(500):
        quota = quotas.tickets(app, user.id, day)
        quota.check_room(quotas.tickets_per_day)
        counter = app.find(TicketCounter.create_id(day), TicketCounter) or TicketCounter(day=day)
        try:
            number = counter.allocate()
        except TicketsExhaustedError as exc:
            midnight = datetime.combine(moment.date() + timedelta(days=1), time(), UTC)
            exc.headers = {"Retry-After": str(max(1, int((midnight - moment).total_seconds())))}
            raise
        ticket = SupportTicket.open(number=number, owner_id=user.id, email=user.email, subject=subject,
                                    message=message, instance_id=instance_id)
        quota.take(ticket.id, quotas.tickets_per_day)
        try:
            recordings = app.save(counter, ticket, quota)
        except IntegrityError:
            continue  # another ticket took this number first (or this customer opened one): look again
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
