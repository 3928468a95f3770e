"""The staff ticket desk: list and search, a ticket with its whole conversation, replies, internal notes,
assignment, close and reopen, triage diagnostics, and the mail that matched no ticket."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep
from api.pagination import CursorQuery, LimitQuery, decode_cursor, encode_cursor, page_of
from api.routers.support import AttachmentOut, ConversationItem, TicketMessage, TicketReply, attachment_response
from api.schemas import FreeText
from domain.attachment import MAX_ATTACHMENTS_PER_MESSAGE
from domain.mail import InboundMail
from domain.support import SupportTicket
from projections import tickets as tickets_view
from projections import users as users_view
from services import inbound_mail, support, triage
from services.bootstrap import Container
from services.lifecycle import NotFoundError

router = APIRouter(prefix="/api/admin/support", tags=["support desk"])

Status = Literal["open", "waiting_on_customer", "closed"]


class DeskTicket(BaseModel):
    id: str
    number: str
    subject: str
    email: str
    owner_id: str
    instance_id: str | None
    status: str
    replies: int
    notes: int
    assignee_id: str | None
    last_from: str = Field(description="customer | staff: who wrote last")
    helpdesk_id: str | None
    created_at: str
    updated_at: str


class DeskList(BaseModel):
    items: list[DeskTicket]
    next_cursor: str | None
    counts: dict[str, int]


class DeskDetail(BaseModel):
    id: str
    number: str
    subject: str
    message: str
    email: str
    owner_id: str
    instance_id: str | None
    status: str
    created_at: str | None
    assignee: dict[str, Any] | None
    helpdesk: dict[str, str]
    attachments: list[AttachmentOut]
    replies: list[TicketReply] = Field(description="the replies after the opening message (no notes)")
    messages: list[ConversationItem] = Field(description="everything, oldest first: messages, internal notes "
                                             "(`kind: note`) and status changes (`kind: event`)")


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: FreeText = Field(min_length=1, max_length=10_000)
    attachments: list[UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS_PER_MESSAGE)


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee_id: UUID | None = Field(description="an operator's user id; null: unassign")


class StaffMember(BaseModel):
    id: str
    email: str


class StaffList(BaseModel):
    items: list[StaffMember]
    next_cursor: str | None


class MailOut(BaseModel):
    id: str
    message_id: str
    channel: str
    from_address: str
    recipients: str
    subject: str
    status: str
    reason: str | None
    ticket_id: str | None
    ticket_number: str | None
    attachments: int
    refused: int
    raw_size: int
    received_at: str


class MailList(BaseModel):
    items: list[MailOut]
    next_cursor: str | None


class MailDetail(BaseModel):
    id: str
    message_id: str
    from_address: str
    subject: str
    status: str
    reason: str | None
    text: str
    attachments: list[AttachmentOut]
    raw_sha256: str


def _detail(container: Container, ticket: SupportTicket) -> DeskDetail:
    view = support.ticket_view(container.app, ticket, staff=True)
    return DeskDetail(**{k: v for k, v in view.items() if k in DeskDetail.model_fields})


@router.get("/tickets", response_model=DeskList)
def desk(_: AdminDep, container: ContainerDep, status: Status | None = None,
         q: Annotated[str | None, Query(max_length=200, description="number, email or subject (substring)")] = None,
         assignee: Annotated[str | None, Query(max_length=64,
                                               description="a staff member's id, `none` for unassigned")] = None,
         limit: LimitQuery = 100, cursor: CursorQuery = None) -> DeskList:
    """Every ticket, newest first: `?status=`, `?q=` (searches number, customer email and subject), `?assignee=`,
    paginated with `?limit=` and `?cursor=`. `counts` has the number of tickets in each status."""
    after = tuple(decode_cursor(cursor, 2)) if cursor else None
    rows = tickets_view.search(container.db, status, q, assignee, limit + 1, after)  # type: ignore[arg-type]
    more = len(rows) > limit
    rows = rows[:limit]
    return DeskList(items=[DeskTicket(**r) for r in rows],
                    next_cursor=encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None,
                    counts={s: tickets_view.counts(container.db).get(s, 0) for s in
                            ("open", "waiting_on_customer", "closed")})


@router.get("/staff", response_model=StaffList)
def staff(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100, cursor: CursorQuery = None) -> StaffList:
    """Who tickets can be assigned to: the operators whose accounts are enabled."""
    members = [StaffMember(id=u["id"], email=u["email"]) for u in users_view.list_users(container.db)
               if u["admin"] and not u["disabled"]]
    items, next_cursor = page_of(members, limit, cursor)
    return StaffList(items=items, next_cursor=next_cursor)


@router.get("/tickets/{ticket_id}", response_model=DeskDetail)
def ticket(ticket_id: UUID, _: AdminDep, container: ContainerDep) -> DeskDetail:
    """A ticket with its whole conversation: the customer's and staff's messages, internal notes, assignments,
    closes and reopens, each with its author and time."""
    return _detail(container, support.load_ticket(container.app, ticket_id, None))


async def _changed(container: Container, response: Response, result: tuple[SupportTicket, int]) -> DeskDetail:
    ticket, position = result
    await read_your_writes(container, response, position, "tickets")
    return _detail(container, ticket)


@router.post("/tickets/{ticket_id}/reply", response_model=DeskDetail)
async def staff_reply(ticket_id: UUID, body: TicketMessage, response: Response, admin: AdminDep,
                      container: ContainerDep) -> DeskDetail:
    """Reply to the customer (mailed to them with the ticket's Reply-To); the ticket waits on the customer."""
    def run() -> tuple[SupportTicket, int]:
        attachments = support.resolve_uploads(container.app, admin, body.attachments)
        return support.reply(container.app, admin, ticket_id, body.message, attachments)

    return await _changed(container, response, await run_in_threadpool(run))


@router.post("/tickets/{ticket_id}/notes", response_model=DeskDetail)
async def note(ticket_id: UUID, body: NoteIn, response: Response, admin: AdminDep,
               container: ContainerDep) -> DeskDetail:
    """An internal note: staff see it here; the customer never does (no customer route, email or export)."""
    def run() -> tuple[SupportTicket, int]:
        attachments = support.resolve_uploads(container.app, admin, body.attachments)
        return support.add_note(container.app, admin, ticket_id, body.note, attachments)

    return await _changed(container, response, await run_in_threadpool(run))


@router.post("/tickets/{ticket_id}/assign", response_model=DeskDetail)
async def assign(ticket_id: UUID, body: AssignIn, response: Response, admin: AdminDep,
                 container: ContainerDep) -> DeskDetail:
    """Assign to an operator (422 `not_staff` for anyone else), or unassign with null."""
    return await _changed(container, response, await run_in_threadpool(
        support.assign, container.app, admin, ticket_id, body.assignee_id))


@router.post("/tickets/{ticket_id}/close", response_model=DeskDetail)
async def close(ticket_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> DeskDetail:
    return await _changed(container, response, await run_in_threadpool(support.close, container.app, admin,
                                                                        ticket_id))


@router.post("/tickets/{ticket_id}/reopen", response_model=DeskDetail)
async def reopen(ticket_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> DeskDetail:
    return await _changed(container, response, await run_in_threadpool(support.reopen, container.app, admin,
                                                                        ticket_id))


@router.get("/tickets/{ticket_id}/triage")
async def ticket_triage(ticket_id: UUID, _: AdminDep, container: ContainerDep) -> dict[str, Any]:
    """Read-only diagnostics, computed now: the customer's billing state and servers; for the server the ticket
    names, its status, address, node (null: not recorded by this version), last operations with their errors,
    drift findings and repairs, and its last console lines (staff only)."""
    def run() -> dict[str, Any]:
        found = support.load_ticket(container.app, ticket_id, None)
        return triage.triage(container.app, container.db, container.driver, found)

    return await run_in_threadpool(run)


# Mail that matched no ticket.

@router.get("/mail", response_model=MailList)
def mail(_: AdminDep, container: ContainerDep,
         status: Literal["unmatched", "matched", "dismissed", "all"] = "unmatched",
         limit: LimitQuery = 100, cursor: CursorQuery = None) -> MailList:
    """Mail received for support, newest first; by default the unmatched (a stranger's, a forged or unknown
    ticket number, a sender who is not the ticket's owner, an auto-reply): kept here, never put on a ticket."""
    after = tuple(decode_cursor(cursor, 2)) if cursor else None
    rows = tickets_view.list_mail(container.db, None if status == "all" else status, limit + 1,
                                  after)  # type: ignore[arg-type]
    more = len(rows) > limit
    rows = rows[:limit]
    return MailList(items=[MailOut(**r) for r in rows],
                    next_cursor=encode_cursor(rows[-1]["received_at"], rows[-1]["id"]) if more else None)


def _mail(container: Container, mail_id: UUID) -> InboundMail:
    found = container.app.find(mail_id, InboundMail)
    if found is None:
        raise NotFoundError("no such mail")
    return found


@router.get("/mail/{mail_id}", response_model=MailDetail)
def mail_detail(mail_id: UUID, _: AdminDep, container: ContainerDep) -> MailDetail:
    m = _mail(container, mail_id)
    return MailDetail(id=str(m.id), message_id=m.message_id, from_address=m.from_address, subject=m.subject,
                      status=m.outcome, reason=m.reason, text=m.text, attachments=m.attachments,
                      raw_sha256=m.raw_sha256)


@router.get("/mail/{mail_id}/raw", response_class=Response, responses={200: {"content": {"message/rfc822": {}}}})
def mail_raw(mail_id: UUID, _: AdminDep, container: ContainerDep) -> Response:
    """The message as it was received, as a download (`.eml`)."""
    m = _mail(container, mail_id)
    return attachment_response(container.blobs.read(m.raw_sha256), f"{m.id}.eml", "message/rfc822")


@router.get("/mail/{mail_id}/attachments/{sha256}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
def mail_attachment(mail_id: UUID, sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")], _: AdminDep,
                    container: ContainerDep) -> Response:
    m = _mail(container, mail_id)
    found = next((a for a in m.attachments if a["sha256"] == sha256), None)
    if found is None:
        raise NotFoundError("no such attachment on this mail")
    return attachment_response(container.blobs.read(sha256), found["name"], found["content_type"])


@router.post("/mail/{mail_id}/dismiss", response_model=MailOut)
async def dismiss(mail_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> MailOut:
    """Mark unmatched mail as handled (it stays recorded)."""
    m = await run_in_threadpool(_mail, container, mail_id)
    position = await run_in_threadpool(inbound_mail.dismiss, container.app, m, admin.id)
    await read_your_writes(container, response, position, "inbound_mail")
    row = tickets_view.get_mail(container.db, str(mail_id))
    assert row is not None
    return MailOut(**row)
