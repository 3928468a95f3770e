"""Use cases of the support desk: tickets and their conversation, uploads, notes, assignment, status.

Opening a ticket saves, in one transaction, the day's `TicketCounter` (the number), the ticket,
and the customer's tickets `Quota` for that UTC day, so neither the numbers nor the daily quota
can be overshot by concurrent requests. The quota is checked before a number is taken.

Every change to an existing ticket loads it, commands it and saves it; a concurrent change (a
customer's email arriving while staff reply) collides on the stream's version and is retried on
the reloaded ticket, so neither is lost.

The conversation is read from the ticket's own stream (timestamps and authors included), so it
is exact the moment a change is saved. `conversation(..., staff=False)` is what a customer may
read: it never contains an internal note.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.attachment import MAX_ATTACHMENTS_PER_MESSAGE, AttachmentRefusedError, SupportUpload, classify, safe_name
from domain.errors import DomainError
from domain.support import SupportTicket, TicketCounter, TicketsExhaustedError
from domain.user import User
from services.infrastructure.blobs import BlobStore
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.quotas import UNLIMITED, Quotas
from services.users import Principal

T = TypeVar("T")


class NotStaffError(DomainError):
    code = "not_staff"


class TooManyAttachmentsError(DomainError):
    code = "too_many_attachments"


# Uploads.

def store_upload(app: ZLH, blobs: BlobStore, user: Principal, name: str | None, data: bytes) -> SupportUpload:
    """Sniff, store and record one file a user uploads for a message; refused files are not stored."""
    clean = safe_name(name)
    content_type = classify(clean, data)  # AttachmentRefusedError: disguised, empty or too large
    sha = blobs.put(data)
    upload = SupportUpload.record(user.id, sha, clean, len(data), content_type)
    try:
        app.save(upload)
    except IntegrityError:  # the same file under the same name again: the same upload
        existing = app.find(upload.id, SupportUpload)
        assert existing is not None
        return existing
    return upload


def resolve_uploads(app: ZLH, user: Principal, upload_ids: Iterable[UUID]) -> list[dict[str, Any]]:
    """The attachments a message names by upload id: only the caller's own uploads (else 404)."""
    ids = list(dict.fromkeys(upload_ids))
    if len(ids) > MAX_ATTACHMENTS_PER_MESSAGE:
        raise TooManyAttachmentsError(f"a message may carry at most {MAX_ATTACHMENTS_PER_MESSAGE} attachments")
    out = []
    for upload_id in ids:
        upload = app.find(upload_id, SupportUpload)
        if upload is None or upload.owner_id != user.id:
            raise NotFoundError(f"no such upload {upload_id}")
        out.append(upload.as_attachment())
    return out


# Tickets.

def open_ticket(app: ZLH, user: Principal, subject: str, message: str, instance_id: UUID | None,
                now: datetime | None = None, quotas: Quotas = UNLIMITED,
                attachments: list[dict[str, Any]] | None = None, via: str = "portal") -> tuple[SupportTicket, int]:
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
                                    message=message, instance_id=instance_id, attachments=attachments, via=via)
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


def change(app: ZLH, ticket_id: UUID, owner_id: UUID | None, command: Callable[[SupportTicket], T],
           *also: Any) -> tuple[SupportTicket, int, T]:
    """Load, command and save a ticket (with `also` in the same transaction), retrying on a concurrent change.

    Returns the ticket, the log position of the save (0 when the command recorded nothing) and what the
    command returned.
    """
    for _ in range(50):
        ticket = load_ticket(app, ticket_id, owner_id)
        result = command(ticket)
        if not ticket.pending_events and not any(getattr(a, "pending_events", None) for a in also):
            return ticket, 0, result
        try:
            recordings = app.save(ticket, *also)
        except IntegrityError:
            continue
        return ticket, recordings[-1].notification.id if recordings else 0, result
    raise RuntimeError(f"ticket {ticket_id} changed 50 times while this change was being saved")


def reply(app: ZLH, user: Principal, ticket_id: UUID, message: str,
          attachments: list[dict[str, Any]] | None = None) -> tuple[SupportTicket, int]:
    """A reply on the caller's ticket (staff: on any ticket, as staff unless it is their own)."""
    def command(ticket: SupportTicket) -> None:
        ticket.reply(user.id, staff=user.admin and ticket.owner_id != user.id, message=message,
                     attachments=attachments)

    ticket, position, _ = change(app, ticket_id, None if user.admin else user.id, command)
    return ticket, position


def add_note(app: ZLH, admin: Principal, ticket_id: UUID, note: str,
             attachments: list[dict[str, Any]] | None = None) -> tuple[SupportTicket, int]:
    ticket, position, _ = change(app, ticket_id, None, lambda t: t.add_note(admin.id, note, attachments))
    return ticket, position


def staff_member(app: ZLH, user_id: UUID) -> User:
    user = app.find(user_id, User)
    if user is None or not user.admin or user.disabled:
        raise NotStaffError("tickets are assigned to staff: an operator (admin) whose account is enabled")
    return user


def assign(app: ZLH, admin: Principal, ticket_id: UUID, assignee_id: UUID | None) -> tuple[SupportTicket, int]:
    if assignee_id is not None:
        staff_member(app, assignee_id)
    ticket, position, _ = change(app, ticket_id, None, lambda t: t.assign(assignee_id, admin.id))
    return ticket, position


def close(app: ZLH, user: Principal, ticket_id: UUID) -> tuple[SupportTicket, int]:
    ticket, position, _ = change(app, ticket_id, None if user.admin else user.id, lambda t: t.close(user.id))
    return ticket, position


def reopen(app: ZLH, admin: Principal, ticket_id: UUID) -> tuple[SupportTicket, int]:
    ticket, position, _ = change(app, ticket_id, None, lambda t: t.reopen(admin.id))
    return ticket, position


# Reading a ticket.

def _emails(app: ZLH, ids: set[UUID]) -> dict[UUID, str]:
    out = {}
    for uid in ids:
        user = app.find(uid, User)
        if user is not None:
            out[uid] = user.email
    return out


def conversation(app: ZLH, ticket: SupportTicket, staff: bool) -> list[dict[str, Any]]:
    """The ticket's messages, oldest first; with `staff`, internal notes and status changes too.

    Each item: `{"kind": "message"|"note"|"event", "at", "author": {"id", "email", "staff"}, "message",
    "attachments", "via"}`; events (`assigned`, `closed`, `reopened`) carry `"event"` and `"detail"`.
    """
    events = app.stream(ticket.id)
    actors = set()
    for e in events:
        for name in ("owner_id", "author_id", "closed_by", "reopened_by", "assigned_by", "assignee_id"):
            value = getattr(e, name, None)
            if isinstance(value, UUID):
                actors.add(value)
    emails = _emails(app, actors)

    def author(uid: UUID, is_staff: bool, email: str | None = None) -> dict[str, Any]:
        return {"id": str(uid), "email": emails.get(uid) or email, "staff": is_staff}

    out: list[dict[str, Any]] = []
    for e in events:
        at = e.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
        base = {"version": e.originator_version, "at": at}
        if isinstance(e, SupportTicket.Opened):
            out.append({**base, "kind": "message", "author": author(e.owner_id, False, e.email),
                        "message": e.message, "attachments": e.attachments, "via": e.via})
        elif isinstance(e, SupportTicket.Replied):
            out.append({**base, "kind": "message", "author": author(e.author_id, e.staff, e.author_email),
                        "message": e.message, "attachments": e.attachments, "via": e.via})
        elif not staff:
            continue
        elif isinstance(e, SupportTicket.NoteAdded):
            out.append({**base, "kind": "note", "author": author(e.author_id, True, e.author_email),
                        "message": e.note, "attachments": e.attachments, "via": e.via})
        elif isinstance(e, SupportTicket.Assigned):
            target = emails.get(e.assignee_id, str(e.assignee_id)) if e.assignee_id else "nobody"
            out.append({**base, "kind": "event", "event": "assigned", "author": author(e.assigned_by, True),
                        "detail": f"assigned to {target}"})
        elif isinstance(e, SupportTicket.Closed):
            out.append({**base, "kind": "event", "event": "closed", "author": author(e.closed_by, True),
                        "detail": "closed"})
        elif isinstance(e, SupportTicket.Reopened):
            out.append({**base, "kind": "event", "event": "reopened", "author": author(e.reopened_by, True),
                        "detail": f"reopened: {e.reason}"})
    if not staff:  # a customer sees staff as "ZLH Support", never a staff member's address
        for item in out:
            if item["author"]["staff"]:
                item["author"] = {"id": None, "email": None, "staff": True}
    return out


def ticket_view(app: ZLH, ticket: SupportTicket, staff: bool) -> dict[str, Any]:
    """The ticket with its conversation, as a customer (`staff` False) or staff may read it."""
    messages = conversation(app, ticket, staff)
    first = messages[0]["at"] if messages else None
    view: dict[str, Any] = {
        "id": str(ticket.id), "number": ticket.number, "subject": ticket.subject, "message": ticket.message,
        "instance_id": str(ticket.instance_id) if ticket.instance_id else None, "status": ticket.status,
        "created_at": first, "attachments": ticket.attachments,
        "replies": [{"staff": m["author"]["staff"], "message": m["message"], "at": m["at"],
                     "attachments": m["attachments"], "via": m["via"]}
                    for m in messages[1:] if m["kind"] == "message"],
        "messages": messages,
    }
    if staff:
        assignee = None
        if ticket.assignee_id is not None:
            assignee = {"id": str(ticket.assignee_id),
                        "email": _emails(app, {ticket.assignee_id}).get(ticket.assignee_id)}
        view |= {"email": ticket.email, "owner_id": str(ticket.owner_id), "assignee": assignee,
                 "helpdesk": dict(ticket.helpdesk)}
    return view


def attachment_of(app: ZLH, user: Principal, ticket_id: UUID, sha256: str) -> dict[str, Any]:
    """An attachment of a ticket the caller may download: its owner (never a note's), or staff (all)."""
    ticket = load_ticket(app, ticket_id, None if user.admin else user.id)
    allowed = ticket.all_attachments() if user.admin else ticket.customer_attachments()
    if sha256 not in allowed:
        raise NotFoundError("no such attachment on this ticket")
    candidates = list(ticket.attachments)
    for r in ticket.replies:
        candidates += r["attachments"]  # type: ignore[arg-type]
    if user.admin:
        for n in ticket.notes:
            candidates += n["attachments"]  # type: ignore[arg-type]
    return next(a for a in candidates if a["sha256"] == sha256)


__all__ = ["AttachmentRefusedError", "NotStaffError", "TooManyAttachmentsError", "add_note", "assign",
           "attachment_of", "change", "close", "conversation", "load_ticket", "open_ticket", "reopen", "reply",
           "resolve_uploads", "staff_member", "store_upload", "ticket_view"]
