"""Support tickets and their human numbers.

A ticket's number is `ZLH-YYYYMMDD-XXXX`: the UTC date and a four-digit sequence.
The sequence comes from a `TicketCounter` per date, saved in the same transaction
as the ticket, so two concurrent tickets that take the same number collide on the
counter's version and one of them retries: unique by the store's optimistic
concurrency, not by a check-then-insert.
"""

from __future__ import annotations

from datetime import date
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, IllegalTransitionError
from domain.ids import derive
from domain.text import check_text

MAX_TICKETS_PER_DAY = 9999


class TicketsExhaustedError(DomainError):
    code = "tickets_exhausted"


def ticket_number(day: date, sequence: int) -> str:
    return f"ZLH-{day:%Y%m%d}-{sequence:04d}"


class TicketCounter(Aggregate):
    TOPIC = "zlh.TicketCounter"

    class Event(Aggregate.Event):
        TOPIC = "zlh.TicketCounter.Event"

    class Started(Event, Aggregate.Created):
        TOPIC = "zlh.TicketCounter.Started"
        day: str

    class NumberAllocated(Event):
        TOPIC = "zlh.TicketCounter.NumberAllocated"
        sequence: int

    @staticmethod
    def create_id(day: str) -> UUID:
        return derive("ticket-counter", day)

    @event(Started)
    def __init__(self, day: str) -> None:
        self.day = day
        self.last = 0

    def allocate(self) -> str:
        """The next number of this day."""
        if self.last >= MAX_TICKETS_PER_DAY:
            raise TicketsExhaustedError(f"all {MAX_TICKETS_PER_DAY} ticket numbers of {self.day} (UTC) are taken; "
                                        "open the ticket after midnight UTC, or write to staff another way")
        self._allocated(sequence=self.last + 1)
        return ticket_number(date.fromisoformat(self.day), self.last)

    @event(NumberAllocated)
    def _allocated(self, sequence: int) -> None:
        self.last = sequence


class SupportTicket(Aggregate):
    TOPIC = "zlh.SupportTicket"

    class Event(Aggregate.Event):
        TOPIC = "zlh.SupportTicket.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.SupportTicket.Opened"
        number: str
        owner_id: UUID
        email: str
        subject: str
        message: str
        instance_id: UUID | None

    class Replied(Event):
        TOPIC = "zlh.SupportTicket.Replied"
        author_id: UUID
        staff: bool
        message: str

    class Closed(Event):
        TOPIC = "zlh.SupportTicket.Closed"
        closed_by: UUID

    @staticmethod
    def create_id(number: str) -> UUID:
        """A ticket's id derives from its number: one number, one ticket."""
        return derive("ticket", number)

    @classmethod
    def open(cls, number: str, owner_id: UUID, email: str, subject: str, message: str,
             instance_id: UUID | None) -> SupportTicket:
        """A new ticket, once its subject and message are storable text."""
        check_text("subject", subject)
        check_text("message", message)
        check_text("email", email)
        return cls(number=number, owner_id=owner_id, email=email, subject=subject, message=message,
                   instance_id=instance_id)

    @event(Opened)
    def __init__(self, number: str, owner_id: UUID, email: str, subject: str, message: str,
                 instance_id: UUID | None) -> None:
        self.number = number
        self.owner_id = owner_id
        self.email = email
        self.subject = subject
        self.message = message
        self.instance_id = instance_id
        self.status = "open"
        self.replies: list[dict[str, object]] = []

    def reply(self, author_id: UUID, staff: bool, message: str) -> None:
        check_text("message", message)
        if self.status == "closed":
            raise IllegalTransitionError("the ticket is closed")
        self._replied(author_id=author_id, staff=staff, message=message)

    def close(self, closed_by: UUID) -> None:
        if self.status == "closed":
            raise IllegalTransitionError("the ticket is already closed")
        self._closed(closed_by=closed_by)

    @event(Replied)
    def _replied(self, author_id: UUID, staff: bool, message: str) -> None:
        self.replies.append({"author_id": author_id, "staff": staff, "message": message})

    @event(Closed)
    def _closed(self, closed_by: UUID) -> None:
        self.status = "closed"
