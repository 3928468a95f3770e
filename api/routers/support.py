"""Support tickets, announcements and the notepad."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep, UserDep
from api.openapi import IF_MATCH as IF_MATCH_SCHEMA
from api.pagination import CursorQuery, LimitQuery, page
from api.problems import Problem
from api.schemas import FreeText, Timestamp
from domain.attachment import MAX_ATTACHMENTS_PER_MESSAGE
from domain.support import SupportTicket
from projections import announcements as announcements_view
from projections import tickets as tickets_view
from services import announcements, notes, support
from services.bootstrap import Container

router = APIRouter(prefix="/api", tags=["support"])

#: The notepad's `If-Match`: a version, bare or as an ETag (`"3"`, `W/"3"`); ASCII digits only (not "²").
IF_MATCH = re.compile(r'(?:W/)?"([0-9]{1,18})"|([0-9]{1,18})', re.ASCII)


class OpenTicket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: FreeText = Field(min_length=1, max_length=200)
    message: FreeText = Field(min_length=1, max_length=10_000)
    instance_id: UUID | None = None
    attachments: list[UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS_PER_MESSAGE,
                                    description="ids of your uploads (POST /api/support/attachments)")


class TicketMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: FreeText = Field(min_length=1, max_length=10_000)
    attachments: list[UUID] = Field(default_factory=list, max_length=MAX_ATTACHMENTS_PER_MESSAGE,
                                    description="ids of your uploads (POST /api/support/attachments)")


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


class AttachmentOut(BaseModel):
    sha256: str
    name: str
    size: int
    content_type: str


class TicketReply(BaseModel):
    staff: bool
    message: str
    at: str
    attachments: list[AttachmentOut]
    via: str


class ConversationItem(BaseModel):
    kind: str = Field(description="message | note (staff only) | event (staff only)")
    version: int
    at: str
    author: dict[str, Any]
    message: str | None = None
    attachments: list[AttachmentOut] = Field(default_factory=list)
    via: str | None = None
    event: str | None = None
    detail: str | None = None


class TicketDetail(BaseModel):
    id: str
    number: str
    subject: str
    message: str
    instance_id: str | None
    status: str
    created_at: str | None
    attachments: list[AttachmentOut]
    replies: list[TicketReply]
    messages: list[ConversationItem]


class UploadOut(BaseModel):
    id: str
    name: str
    size: int
    content_type: str
    sha256: str


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


def _detail(container: Container, ticket: SupportTicket) -> TicketDetail:
    return TicketDetail(**support.ticket_view(container.app, ticket, staff=False))


def attachment_response(data: bytes, name: str, content_type: str) -> Response:
    """An attachment as a download, never rendered: `Content-Disposition: attachment` and `nosniff`."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    media = f"{content_type}; charset=utf-8" if content_type == "text/plain" else content_type
    return Response(content=data, media_type=media, headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})


# Support tickets.

@router.post("/support/attachments", status_code=201, response_model=UploadOut,
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def upload(request: Request, user: UserDep, container: ContainerDep,
                 name: Annotated[str, Query(min_length=1, max_length=255, description="the file's name")]
                 ) -> UploadOut:
    """Upload one file (the raw bytes as the body, at most 10 MiB; larger: 413 `too_large`) to attach to a new
    ticket or a reply by its `id`. The type is sniffed from the bytes, never taken from `Content-Type`; a file
    whose name promises another kind of content (an executable named `.png`) is refused: 422
    `attachment_disguised`, nothing stored."""
    data = await request.body()
    stored = await run_in_threadpool(support.store_upload, container.app, container.blobs, user, name, data)
    return UploadOut(id=str(stored.id), name=stored.name, size=stored.size, content_type=stored.content_type,
                     sha256=stored.sha256)


@router.post("/support/create", status_code=201, response_model=TicketCreated)
async def open_ticket(body: OpenTicket, response: Response, user: UserDep, container: ContainerDep) -> TicketCreated:
    def run() -> tuple[SupportTicket, int]:
        attachments = support.resolve_uploads(container.app, user, body.attachments)
        return support.open_ticket(container.app, user, body.subject, body.message, body.instance_id, None,
                                   container.quotas, attachments)

    ticket, position = await run_in_threadpool(run)
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
    """A ticket and its conversation as its customer reads it (staff replies, never internal notes)."""
    return _detail(container, support.load_ticket(container.app, ticket_id, None if user.admin else user.id))


@router.post("/support/tickets/{ticket_id}/reply", response_model=TicketDetail)
async def reply(ticket_id: UUID, body: TicketMessage, response: Response, user: UserDep,
                container: ContainerDep) -> TicketDetail:
    """Reply on your ticket (a closed one is reopened by your reply)."""
    def run() -> tuple[SupportTicket, int]:
        attachments = support.resolve_uploads(container.app, user, body.attachments)
        return support.reply(container.app, user, ticket_id, body.message, attachments)

    ticket, position = await run_in_threadpool(run)
    await read_your_writes(container, response, position, "tickets")
    return _detail(container, ticket)


@router.get("/support/tickets/{ticket_id}/attachments/{sha256}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(ticket_id: UUID, sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")], user: UserDep,
                   container: ContainerDep) -> Response:
    """An attachment of your ticket (staff: of any ticket, notes' too), as a download."""
    found = await run_in_threadpool(support.attachment_of, container.app, user, ticket_id, sha256)
    data = await run_in_threadpool(container.blobs.read, sha256)
    return attachment_response(data, found["name"], found["content_type"])


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
              if_match: Annotated[str | None, Header(json_schema_extra=IF_MATCH_SCHEMA)] = None) -> NoteOut:
    if if_match is None:
        raise Problem(428, "precondition_required", "send If-Match: VERSION (from GET /api/notes)")
    match = IF_MATCH.fullmatch(if_match.strip())
    if match is None:
        raise Problem(400, "bad_if_match", "If-Match must be the note's version: 1-18 ASCII digits, may be quoted")
    content, version = notes.save_note(container.app, user.id, body.content, int(match.group(1) or match.group(2)))
    response.headers["ETag"] = f'"{version}"'
    return NoteOut(content=content, version=version)
