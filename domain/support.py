"""Support tickets and their human numbers.

A ticket's number is `ZLH-YYYYMMDD-XXXX`: the UTC date and a four-digit sequence.
The sequence comes from a `TicketCounter` per date, saved in the same transaction
as the ticket, so two concurrent tickets that take the same number collide on the
counter's version and one of them retries: unique by the store's optimistic
concurrency, not by a check-then-insert.

A ticket is `open`, `waiting_on_customer` (staff replied last) or `closed`. A staff
reply sets `waiting_on_customer`; a customer reply sets `open` again, and a customer
reply to a closed ticket reopens it first (nothing a customer writes is dropped).
Internal notes (`NoteAdded`) are for staff only: they change no status, and no route,
email or export a customer reads contains them. Every event names its actor.

Messages carry attachments as `{"sha256", "name", "size", "content_type"}` (the bytes
live in the attachment store) and say where they came from (`via`: `portal`, `email`,
or a helpdesk such as `zammad`); `ref` is the outside identity of an imported message
(an email's Message-ID, a helpdesk article), recorded once: the same `ref` twice is a
duplicate, not a second reply. `HelpdeskLinked` and `HelpdeskMessageLinked` record the
ids a mirrored helpdesk gave the ticket and each of its messages; this stream stays the
record.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError, IllegalTransitionError
from domain.ids import derive
from domain.text import check_text

MAX_TICKETS_PER_DAY = 9999

OPEN = "open"
WAITING_ON_CUSTOMER = "waiting_on_customer"
CLOSED = "closed"
STATUSES = (OPEN, WAITING_ON_CUSTOMER, CLOSED)

#: Where a message came from.
VIA_PORTAL, VIA_EMAIL = "portal", "email"


class TicketsExhaustedError(DomainError):
    code = "tickets_exhausted"


class DuplicateMessageError(DomainError):
    """A message with this outside identity (`ref`) is on the ticket already."""

    code = "duplicate_message"


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


def _check_attachments(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for a in attachments:
        check_text("attachment name", a["name"])
        out.append({"sha256": str(a["sha256"]), "name": str(a["name"]), "size": int(a["size"]),
                    "content_type": str(a["content_type"])})
    return out


class SupportTicket(Aggregate):
    TOPIC = "zlh.SupportTicket"

    class Event(Aggregate.Event):
        TOPIC = "zlh.SupportTicket.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.SupportTicket.Opened"
        class_version = 2
        number: str
        owner_id: UUID
        email: str
        subject: str
        message: str
        instance_id: UUID | None
        attachments: list[dict[str, Any]]
        via: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Tickets opened before attachments and email: opened in the portal, nothing attached."""
            state.update(attachments=[], via=VIA_PORTAL)

    class Replied(Event):
        """A message on the conversation: by the customer (`staff` false) or by staff."""

        TOPIC = "zlh.SupportTicket.Replied"
        class_version = 2
        author_id: UUID
        staff: bool
        message: str
        attachments: list[dict[str, Any]]
        via: str
        ref: str | None
        author_email: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(attachments=[], via=VIA_PORTAL, ref=None, author_email=None)

    class NoteAdded(Event):
        """An internal note: staff only, never shown, mailed or exported to the customer."""

        TOPIC = "zlh.SupportTicket.NoteAdded"
        author_id: UUID
        note: str
        attachments: list[dict[str, Any]]
        via: str
        ref: str | None
        author_email: str | None

    class Assigned(Event):
        """`assignee_id` None: unassigned."""

        TOPIC = "zlh.SupportTicket.Assigned"
        assignee_id: UUID | None
        assigned_by: UUID

    class Closed(Event):
        TOPIC = "zlh.SupportTicket.Closed"
        closed_by: UUID

    class Reopened(Event):
        TOPIC = "zlh.SupportTicket.Reopened"
        reopened_by: UUID
        reason: str

    class HelpdeskLinked(Event):
        """The mirrored helpdesk's ticket for this one (`system` e.g. `zammad`)."""

        TOPIC = "zlh.SupportTicket.HelpdeskLinked"
        system: str
        remote_id: str
        remote_number: str | None

    class HelpdeskMessageLinked(Event):
        """Our event `version` (the opening message, a reply, a note) is the helpdesk's `remote_id`."""

        TOPIC = "zlh.SupportTicket.HelpdeskMessageLinked"
        system: str
        version: int
        remote_id: str

    @staticmethod
    def create_id(number: str) -> UUID:
        """A ticket's id derives from its number: one number, one ticket."""
        return derive("ticket", number)

    @classmethod
    def open(cls, number: str, owner_id: UUID, email: str, subject: str, message: str,
             instance_id: UUID | None, attachments: list[dict[str, Any]] | None = None,
             via: str = VIA_PORTAL) -> SupportTicket:
        """A new ticket, once its subject and message are storable text."""
        check_text("subject", subject)
        check_text("message", message)
        check_text("email", email)
        return cls(number=number, owner_id=owner_id, email=email, subject=subject, message=message,
                   instance_id=instance_id, attachments=_check_attachments(attachments or []), via=via)

    @event(Opened)
    def __init__(self, number: str, owner_id: UUID, email: str, subject: str, message: str,
                 instance_id: UUID | None, attachments: list[dict[str, Any]], via: str) -> None:
        self.number = number
        self.owner_id = owner_id
        self.email = email
        self.subject = subject
        self.message = message
        self.instance_id = instance_id
        self.attachments = list(attachments)
        self.via = via
        self.status = OPEN
        self.replies: list[dict[str, object]] = []
        self.notes: list[dict[str, object]] = []
        self.assignee_id: UUID | None = None
        self.refs: set[str] = set()
        self.helpdesk: dict[str, str] = {}
        self.helpdesk_messages: dict[str, dict[int, str]] = {}

    # Commands.

    def has_ref(self, ref: str | None) -> bool:
        return ref is not None and ref in self.refs

    def reply(self, author_id: UUID, staff: bool, message: str, attachments: list[dict[str, Any]] | None = None,
              via: str = VIA_PORTAL, ref: str | None = None, author_email: str | None = None) -> None:
        """A message on the conversation. A customer's reopens a closed ticket; staff must reopen it first."""
        check_text("message", message)
        if self.has_ref(ref):
            raise DuplicateMessageError(f"message {ref} is on ticket {self.number} already")
        if self.status == CLOSED:
            if staff:
                raise IllegalTransitionError("the ticket is closed; reopen it to reply")
            self._reopened(reopened_by=author_id, reason="the customer replied")
        self._replied(author_id=author_id, staff=staff, message=message,
                      attachments=_check_attachments(attachments or []), via=via, ref=ref, author_email=author_email)

    def add_note(self, author_id: UUID, note: str, attachments: list[dict[str, Any]] | None = None,
                 via: str = VIA_PORTAL, ref: str | None = None, author_email: str | None = None) -> None:
        check_text("note", note)
        if self.has_ref(ref):
            raise DuplicateMessageError(f"note {ref} is on ticket {self.number} already")
        self._note_added(author_id=author_id, note=note, attachments=_check_attachments(attachments or []),
                         via=via, ref=ref, author_email=author_email)

    def assign(self, assignee_id: UUID | None, assigned_by: UUID) -> bool:
        """Assign to a staff member (None: nobody); False when it already is so."""
        if assignee_id == self.assignee_id:
            return False
        self._assigned(assignee_id=assignee_id, assigned_by=assigned_by)
        return True

    def close(self, closed_by: UUID) -> None:
        if self.status == CLOSED:
            raise IllegalTransitionError("the ticket is already closed")
        self._closed(closed_by=closed_by)

    def reopen(self, reopened_by: UUID, reason: str = "reopened by staff") -> None:
        if self.status != CLOSED:
            raise IllegalTransitionError("the ticket is not closed")
        self._reopened(reopened_by=reopened_by, reason=reason)

    def link_helpdesk(self, system: str, remote_id: str, remote_number: str | None) -> bool:
        if self.helpdesk.get(system) == remote_id:
            return False
        self._helpdesk_linked(system=system, remote_id=remote_id, remote_number=remote_number)
        return True

    def link_helpdesk_message(self, system: str, version: int, remote_id: str) -> bool:
        if self.helpdesk_messages.get(system, {}).get(version) == remote_id:
            return False
        self._helpdesk_message_linked(system=system, version=version, remote_id=remote_id)
        return True

    def remote_message_ids(self, system: str) -> set[str]:
        """The helpdesk's ids of every message that is on this ticket already (pushed or imported)."""
        pushed = set(self.helpdesk_messages.get(system, {}).values())
        imported = {ref.split(":", 2)[2] for ref in self.refs if ref.startswith(f"{system}:article:")}
        return pushed | imported

    # Events.

    @event(Replied)
    def _replied(self, author_id: UUID, staff: bool, message: str, attachments: list[dict[str, Any]], via: str,
                 ref: str | None, author_email: str | None) -> None:
        self.replies.append({"author_id": author_id, "staff": staff, "message": message,
                             "attachments": list(attachments), "via": via})
        self.status = WAITING_ON_CUSTOMER if staff else OPEN
        if ref is not None:
            self.refs.add(ref)

    @event(NoteAdded)
    def _note_added(self, author_id: UUID, note: str, attachments: list[dict[str, Any]], via: str,
                    ref: str | None, author_email: str | None) -> None:
        self.notes.append({"author_id": author_id, "note": note, "attachments": list(attachments), "via": via})
        if ref is not None:
            self.refs.add(ref)

    @event(Assigned)
    def _assigned(self, assignee_id: UUID | None, assigned_by: UUID) -> None:
        self.assignee_id = assignee_id

    @event(Closed)
    def _closed(self, closed_by: UUID) -> None:
        self.status = CLOSED

    @event(Reopened)
    def _reopened(self, reopened_by: UUID, reason: str) -> None:
        self.status = OPEN

    @event(HelpdeskLinked)
    def _helpdesk_linked(self, system: str, remote_id: str, remote_number: str | None) -> None:
        self.helpdesk[system] = remote_id

    @event(HelpdeskMessageLinked)
    def _helpdesk_message_linked(self, system: str, version: int, remote_id: str) -> None:
        self.helpdesk_messages.setdefault(system, {})[version] = remote_id

    # What may be shown to whom.

    def customer_attachments(self) -> set[str]:
        """The sha256 of every attachment the customer may download (never a note's)."""
        shas = {a["sha256"] for a in self.attachments}
        for r in self.replies:
            shas |= {a["sha256"] for a in r["attachments"]}  # type: ignore[union-attr]
        return shas

    def all_attachments(self) -> set[str]:
        shas = self.customer_attachments()
        for n in self.notes:
            shas |= {a["sha256"] for a in n["attachments"]}  # type: ignore[union-attr]
        return shas
