"""API tokens: list yours, create one (shown once), revoke one."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import ContainerDep, UserDep
from api.pagination import CursorQuery, LimitQuery, page_of
from api.schemas import FreeText, Timestamp
from projections.base import iso
from services.users import issue_token, list_tokens, revoke_token

router = APIRouter(prefix="/api", tags=["tokens"])


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: FreeText = Field(min_length=1, max_length=100, description="what the token is for")
    scope: Literal["full", "read"] = Field("full", description="`read`: GET and HEAD only")
    expires_at: Timestamp | None = Field(None, description="in the future, at most ten years ahead; null: never")


class TokenCreated(BaseModel):
    id: str
    name: str
    scope: str
    expires_at: str | None
    token: str = Field(description="shown once: only its SHA-256 is stored")


class TokenOut(BaseModel):
    id: str
    name: str
    scope: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None = Field(description="when it last authenticated a request (to about a minute)")
    current: bool = Field(description="whether this is the token of this very request")


class TokenList(BaseModel):
    items: list[TokenOut]
    next_cursor: str | None = None


@router.get("/tokens", response_model=TokenList)
async def my_tokens(user: UserDep, container: ContainerDep, limit: LimitQuery = 100,
                    cursor: CursorQuery = None) -> TokenList:
    rows, next_cursor = page_of(await run_in_threadpool(list_tokens, container.db, user.id), limit, cursor)
    return TokenList(items=[TokenOut(**r, current=r["id"] == str(user.token_id)) for r in rows],
                     next_cursor=next_cursor)


@router.post("/tokens", status_code=201, response_model=TokenCreated)
async def create_token(body: NewToken, response: Response, user: UserDep, container: ContainerDep) -> TokenCreated:
    issued = await run_in_threadpool(issue_token, container.app, user.id, body.name, body.scope, body.expires_at)
    await read_your_writes(container, response, issued.position, "tokens")
    expires = iso(issued.expires_at) if issued.expires_at is not None else None
    return TokenCreated(id=str(issued.id), name=issued.name, scope=issued.scope, expires_at=expires,
                        token=issued.token)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke(token_id: UUID, user: UserDep, container: ContainerDep) -> Response:
    """Revoke one of your tokens: from the next request on, it answers 401 (another user's token id: 404)."""
    position = await run_in_threadpool(revoke_token, container.app, user.id, token_id)
    response = Response(status_code=204)
    await read_your_writes(container, response, position, "tokens")
    container.access.authenticator.invalidate()
    return response
