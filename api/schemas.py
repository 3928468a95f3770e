"""Request and response bodies of the public API, and the reusable field types they are made of.

`FreeText` is any string a customer stores (subjects, messages, titles, bodies, notes, names, emails):
no NUL, no other control character (tab, LF and CR are fine), no lone surrogate. `Timestamp` is an
RFC 3339 date-time with a timezone, between 1970-01-01T00:00:00Z and 9999-12-30T23:59:59Z in UTC.
Both apply the domain's rules (domain/text.py), which the commands check again; a violation is
422 `validation_error` naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from domain.text import text_problem, timestamp_problem


def _free_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError("free_text", problem)
    return value


def _timestamp(value: datetime) -> datetime:
    problem = timestamp_problem(value)
    if problem is not None:
        raise PydanticCustomError("timestamp_range", problem)
    return value


#: The OpenAPI pattern of free text (JSON Schema cannot say "no lone surrogate"; the server does).
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"


def _free_text_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("pattern", FREE_TEXT_PATTERN)  # a field's own pattern (emails) is stricter already


def _timestamp_schema(schema: dict[str, Any]) -> None:
    schema["description"] = (schema.get("description", "") + " Between 1970-01-01T00:00:00Z and "
                             "9999-12-30T23:59:59Z in UTC, with a timezone.").strip()


#: A string a customer stores: no NUL, no other control character but tab, LF and CR, no lone surrogate.
FreeText = Annotated[str, AfterValidator(_free_text), Field(json_schema_extra=_free_text_schema)]
#: An RFC 3339 date-time with a timezone, within what every read model can hold.
Timestamp = Annotated[datetime, AfterValidator(_timestamp), Field(json_schema_extra=_timestamp_schema)]


class CreateInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["game", "dev"]
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="1-63 of a-z0-9-, starting with a letter")
    template: str = Field(min_length=1, max_length=63)
    variables: dict[str, Any] | None = Field(
        default=None, max_length=64,
        description="The template's variables to set (GET /api/templates lists them); checked against the "
                    "template: 422 `validation_error` naming the variable")


class InstancePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="the new name: 1-63 of a-z0-9-, starting with "
                      "a letter, unique among your servers")


class TemplateVariableOut(BaseModel):
    name: str
    description: str
    type: Literal["string", "int", "bool", "memory"]
    default: str | int | bool | None
    required: bool
    generated: bool
    secret: bool
    constraints: dict[str, Any]


class TemplateResources(BaseModel):
    memory_mb: int
    cpus: float
    disk_mb: int


class TemplateOut(BaseModel):
    name: str
    kind: Literal["game", "dev"]
    description: str
    variables: list[TemplateVariableOut]
    resources: TemplateResources
    available: bool


class TemplateList(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None = None


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
    role: Literal["owner", "subuser", "admin"] = Field(default="owner", description="yours on this server: "
                                                       "`subuser` when its owner invited you")
    permissions: list[str] = Field(default_factory=list, description="what you may do on it (an owner or "
                                   "operator: every permission)")
    #: README "More than one host": the node the server runs on (staff only), and its port there.
    node: str | None = None
    node_id: str | None = None
    port: int | None = None
    #: On `GET /api/instances/{id}` only (asked of its node; null when it does not answer): bytes its files
    #: take, its disk quota, and how its server last ended (`reason`: `out_of_memory`, `stopped`, ...).
    disk_bytes: int | None = None
    disk_quota_bytes: int | None = None
    last_exit: dict[str, Any] | None = None


class InstanceList(BaseModel):
    items: list[InstanceOut]
    next_cursor: str | None = None


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: FreeText = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
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
    next_cursor: str | None = None
