"""Support tickets, announcements and the notepad."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, page
from api.problems import Problem
from api.schemas import FreeText, Timestamp
from domain.support import SupportTicket
from projections import announcements as announcements_view
from projections import tickets as tickets_view
from services import announcements, notes, support

router = APIRouter(prefix="/api", tags=["support"])

#: The notepad's `If-Match`: a version, bare or as an ETag (`"3"`, `W/"3"`); ASCII digits only (not "²").
IF_MATCH = re.compile(r'(?:W/)?"([0-9]{1,18})"|([0-9]{1,18})', re.ASCII)


class OpenTicket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: FreeText = Field(min_length=1, max_length=200)
    message: FreeText = Field(min_length=1, max_length=10_000)
    instance_id: UUID | None = None


class TicketMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: FreeText = Field(min_length=1, max_length=10_000)


class TicketCreated(BaseModel):
    id: str
    number: str
    status: str


class TicketOut(BaseModel):
    id: str
    number: str
    subject: str
    instance_id: str | None
    status: str
    replies: int
    created_at: str
    updated_at: str
    email: str | None = None


class TicketList(BaseModel):
    items: list[TicketOut]
    next_cursor: str | None = None


class TicketDetail(BaseModel):
    id: str
    number: str
    subject: str
    message: str
    instance_id: str | None
    status: str
    replies: list[dict]


class NewAnnouncement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["info", "warning", "critical"]
    title: FreeText = Field(min_length=1, max_length=200)
    body: FreeText = Field(min_length=1, max_length=10_000)
    user_id: UUID | None = None
    starts_at: Timestamp | None = Field(default=None, description="RFC 3339 with a timezone; shown from then on")
    ends_at: Timestamp | None = Field(default=None, description="RFC 3339 with a timezone; hidden from then on")


class AnnouncementOut(BaseModel):
    id: str
    level: str
    title: str
    body: str
    created_at: str
    starts_at: str | None
    ends_at: str | None


class AnnouncementList(BaseModel):
    items: list[AnnouncementOut]
    next_cursor: str | None = None


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: FreeText = Field(description="at most 64 KiB of UTF-8; larger: 413 too_large")


class NoteOut(BaseModel):
    content: FreeText = Field(description="at most 64 KiB of UTF-8; larger: 413 too_large")
    version: int


def _detail(ticket: SupportTicket) -> TicketDetail:
    return TicketDetail(id=str(ticket.id), number=ticket.number, subject=ticket.subject, message=ticket.message,
                        instance_id=str(ticket.instance_id) if ticket.instance_id else None, status=ticket.status,
                        replies=[{"staff": r["staff"], "message": r["message"]} for r in ticket.replies])


# Support tickets.

@router.post("/support/create", status_code=201, response_model=TicketCreated)
async def open_ticket(body: OpenTicket, response: Response, user: UserDep, container: ContainerDep) -> TicketCreated:
    ticket, position = await run_in_threadpool(support.open_ticket, container.app, user, body.subject, body.message,
                                               body.instance_id, None, container.quotas)
    await read_your_writes(container, response, position, "tickets")
    return TicketCreated(id=str(ticket.id), number=ticket.number, status=ticket.status)


@router.get("/support/tickets", response_model=TicketList)
def my_tickets(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
               cursor: CursorQuery = None) -> TicketList:
    """Your tickets, newest first, a page at a time."""
    rows, next_cursor = page(lambda n, after: tickets_view.list_for_owner(container.db, str(user.id), n, after),
                             limit, cursor)
    return TicketList(items=[TicketOut(**{**r, "email": None}) for r in rows], next_cursor=next_cursor)


@router.get("/support/tickets/{ticket_id}", response_model=TicketDetail)
def my_ticket(ticket_id: UUID, user: UserDep, container: ContainerDep) -> TicketDetail:
    return _detail(support.load_ticket(container.app, ticket_id, None if user.admin else user.id))


@router.post("/support/tickets/{ticket_id}/reply", response_model=TicketDetail)
async def reply(ticket_id: UUID, body: TicketMessage, response: Response, user: UserDep,
                container: ContainerDep) -> TicketDetail:
    ticket, position = await run_in_threadpool(support.reply, container.app, user, ticket_id, body.message)
    await read_your_writes(container, response, position, "tickets")
    return _detail(ticket)


@router.get("/admin/support/tickets", response_model=TicketList)
def all_tickets(_: AdminDep, container: ContainerDep, status: Literal["open", "closed"] | None = None,
                limit: LimitQuery = 100, cursor: CursorQuery = None) -> TicketList:
    rows, next_cursor = page(lambda n, after: tickets_view.list_all(container.db, status, n, after), limit, cursor)
    return TicketList(items=[TicketOut(**r) for r in rows], next_cursor=next_cursor)


@router.post("/admin/support/tickets/{ticket_id}/reply", response_model=TicketDetail)
async def staff_reply(ticket_id: UUID, body: TicketMessage, response: Response, admin: AdminDep,
                      container: ContainerDep) -> TicketDetail:
    ticket, position = await run_in_threadpool(support.reply, container.app, admin, ticket_id, body.message)
    await read_your_writes(container, response, position, "tickets")
    return _detail(ticket)


@router.post("/admin/support/tickets/{ticket_id}/close", response_model=TicketDetail)
async def close_ticket(ticket_id: UUID, response: Response, admin: AdminDep, container: ContainerDep) -> TicketDetail:
    ticket, position = await run_in_threadpool(support.close, container.app, admin, ticket_id)
    await read_your_writes(container, response, position, "tickets")
    return _detail(ticket)


# Announcements.

@router.get("/announcements", response_model=AnnouncementList)
def current_announcements(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                          cursor: CursorQuery = None) -> AnnouncementList:
    """The current announcements meant for you (global or addressed to you), newest first, a page at a time."""
    rows, next_cursor = page(lambda n, after: announcements.current_for(container.db, user.id, limit=n, after=after),
                             limit, cursor)
    return AnnouncementList(items=[AnnouncementOut(**r) for r in rows], next_cursor=next_cursor)


@router.post("/admin/announcements", status_code=201, response_model=AnnouncementOut)
async def publish(body: NewAnnouncement, response: Response, _: AdminDep, container: ContainerDep) -> AnnouncementOut:
    announcement, position = await run_in_threadpool(
        announcements.publish, container.app, body.level, body.title, body.body, body.user_id, body.starts_at,
        body.ends_at)
    await read_your_writes(container, response, position, "announcements")
    row = next(r for r in announcements_view.list_all(container.db) if r["id"] == str(announcement.id))
    return AnnouncementOut(**row)


@router.get("/admin/announcements", response_model=AnnouncementList)
def all_announcements(_: AdminDep, container: ContainerDep, limit: LimitQuery = 100,
                      cursor: CursorQuery = None) -> AnnouncementList:
    rows, next_cursor = page(lambda n, after: announcements_view.list_all(container.db, n, after), limit, cursor)
    return AnnouncementList(items=[AnnouncementOut(**r) for r in rows], next_cursor=next_cursor)


@router.delete("/admin/announcements/{announcement_id}", status_code=204)
async def withdraw(announcement_id: UUID, _: AdminDep, container: ContainerDep) -> Response:
    position = await run_in_threadpool(announcements.withdraw, container.app, announcement_id)
    response = Response(status_code=204)
    await read_your_writes(container, response, position, "announcements")
    return response


# Notepad.

@router.get("/notes", response_model=NoteOut)
def read_note(user: UserDep, container: ContainerDep, response: Response) -> NoteOut:
    content, version = notes.read_note(container.app, user.id)
    response.headers["ETag"] = f'"{version}"'
    return NoteOut(content=content, version=version)


@router.put("/notes", response_model=NoteOut)
def save_note(body: NoteIn, user: UserDep, container: ContainerDep, response: Response,
              if_match: Annotated[str | None, Header()] = None) -> NoteOut:
    if if_match is None:
        raise Problem(428, "precondition_required", "send If-Match: VERSION (from GET /api/notes)")
    match = IF_MATCH.fullmatch(if_match.strip())
    if match is None:
        raise Problem(400, "bad_if_match", "If-Match must be the note's version: 1-18 ASCII digits, may be quoted")
    content, version = notes.save_note(container.app, user.id, body.content, int(match.group(1) or match.group(2)))
    response.headers["ETag"] = f'"{version}"'
    return NoteOut(content=content, version=version)
