"""Request and response bodies of the public API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class CreateInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["game", "dev"]
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="1-63 of a-z0-9-, starting with a letter")
    template: str = Field(min_length=1, max_length=63)


class Accepted(BaseModel):
    operation_id: str
    instance_id: str
    status_url: str


class OperationError(BaseModel):
    code: str
    message: str


class OperationOut(BaseModel):
    id: str
    kind: str
    instance_id: str
    phase: Literal["queued", "running", "succeeded", "failed"]
    step: str | None
    error: OperationError | None
    created_at: str
    updated_at: str


class PendingOperation(BaseModel):
    id: str
    kind: str | None
    phase: str | None
    step: str | None


class InstanceOut(BaseModel):
    id: str
    kind: str
    name: str
    template: str
    status: str
    address: str | None
    pending_operation_id: str | None
    pending_operation: PendingOperation | None
    created_at: str
    updated_at: str


class InstanceList(BaseModel):
    items: list[InstanceOut]


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    admin: bool = False


class UserOut(BaseModel):
    id: str
    email: str
    admin: bool


class UserCreated(UserOut):
    token: str


class StreamEvent(BaseModel):
    version: int
    type: str
    timestamp: str
    data: dict[str, Any]


class Stream(BaseModel):
    id: str
    events: list[StreamEvent]


class DeadLetter(BaseModel):
    """An event a follower could not handle and skipped (see ops/runbooks/dead-letters.md)."""

    follower: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    error: str
    attempts: int
    first_attempt_at: str
    last_attempt_at: str
    retry_requested_at: str | None


class ProjectionOut(BaseModel):
    name: str
    position: int
    head: int
    lag: int
    rebuild: dict[str, Any]
    dead_letters: list[DeadLetter]


class ProjectionList(BaseModel):
    items: list[ProjectionOut]
