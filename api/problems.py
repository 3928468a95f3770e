"""RFC 9457 problem details for every error, with a stable `code`."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.security import SECURITY_HEADERS
from domain.errors import DomainError
from domain.text import FORBIDDEN
from services.ports import DriverError, StorageError
from services.problem_documents import PROBLEM_JSON, problem_document

log = logging.getLogger(__name__)

#: HTTP status for each domain error code; anything unlisted is a 409 conflict.
DOMAIN_STATUS = {
    "idempotency_key_reused": 422,
    "name_taken": 409,
    "operation_in_progress": 409,
    "email_taken": 409,
    "illegal_transition": 409,
    "unknown_template": 422,
    "template_unavailable": 422,
    "not_found": 404,
    "version_conflict": 412,
    "too_large": 413,
    "invalid_window": 422,
    "tickets_exhausted": 503,
    "quota_exceeded": 409,
    "token_revoked": 409,
    "cannot_disable_self": 409,
    "billing_suspended": 402,
    "backups_blocked": 402,
    "destructive_action_rejected": 403,
    "customer_linked_elsewhere": 409,
    "bad_signature": 400,
    "bad_payload": 400,
    "validation_error": 422,
    "attachment_refused": 422,
    "attachment_disguised": 422,
    "too_many_attachments": 422,
    "not_staff": 422,
    "duplicate_message": 409,
    "permission_denied": 403,
    "subuser_exists": 409,
    "node_unreachable": 503,
    "ssh_key_exists": 409,
}

#: HTTP status for each driver (node agent) error code that describes what the customer asked for; the
#: driver's message is shown as it is (it names the customer's own paths only).
DRIVER_STATUS = {
    "bad_path": 400,
    "bad_command": 400,
    "is_a_directory": 400,
    "not_a_directory": 400,
    "not_a_file": 400,
    "not_found": 404,
    "too_large": 413,
    "still_running": 409,
    "not_running": 409,
    "console_busy": 409,
    "quota_exceeded": 409,
    "checksum_mismatch": 422,
    "bad_archive": 422,
    "validation_error": 422,
    "already_exists": 409,
    "not_empty": 409,
}
#: Every other driver failure is the node's, not the customer's: 503 (504 when it was too slow) with
#: `Retry-After`, a stable code and a message that says nothing about the node (the log has the rest).
NODE_TIMEOUT_CODES = {"agent_timeout"}
RETRY_AFTER_SECONDS = "10"

_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                  405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}
        self.extra = extra


class ProblemJSONResponse(JSONResponse):
    """`application/problem+json`; a string that UTF-8 cannot carry (a lone surrogate) never makes it a 500."""

    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8",
                                                                                                     "replace")


def problem_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = problem_document(status, code, detail, **extra)
    all_headers = {**SECURITY_HEADERS, **(headers or {})} if status >= 500 else headers
    return ProblemJSONResponse(jsonable_encoder(body), status_code=status, headers=all_headers)


def driver_problem(exc: DriverError) -> JSONResponse:
    """The problem document for a driver (node agent) failure: see DRIVER_STATUS and NODE_TIMEOUT_CODES."""
    status = DRIVER_STATUS.get(exc.code)
    if status is not None:
        # The node's one quota is the disk quota: say which, as the other quotas do.
        extra = {"quota": "disk"} if exc.code == "quota_exceeded" else {}
        return problem_response(status, exc.code, exc.message, **extra)
    log.warning("node failure answered as 503/504: %s: %s", exc.code, exc.message)
    retry = {"Retry-After": RETRY_AFTER_SECONDS}
    if exc.code == "node_unreachable":  # README "More than one host": fail fast while the node is gone
        return problem_response(503, "node_unreachable", exc.message, retry)
    if exc.code in NODE_TIMEOUT_CODES:
        return problem_response(504, "node_timeout", "the node that runs this server did not answer in time; retry "
                                "in a moment", retry)
    return problem_response(503, "node_unavailable", "the node that runs this server cannot do this right now "
                            f"({exc.code}); retry in a moment", retry)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        field = getattr(exc, "field", None)  # a validation error names what it is about (`variables.motd`)
        extra = {"field": field} if isinstance(field, str) and field else {}
        return problem_response(DOMAIN_STATUS.get(exc.code, 409), exc.code, exc.message, exc.headers or None,
                                **exc.extra, **extra)

    @app.exception_handler(DriverError)
    async def _driver(_: Request, exc: DriverError) -> JSONResponse:
        return driver_problem(exc)

    @app.exception_handler(StorageError)
    async def _storage(_: Request, exc: StorageError) -> JSONResponse:
        """Object storage (attachments on S3): a blob that is not there is 404; storage failing, 503."""
        if exc.code == "not_found":
            return problem_response(404, "not_found", "the file is not in storage (any more)")
        log.warning("object storage failed: %s", exc.message)
        return problem_response(503, "storage_unavailable", "file storage cannot be reached right now; retry in a "
                                "moment", {"Retry-After": RETRY_AFTER_SECONDS})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [_printable(p) for p in e.get("loc", ())], "msg": _printable(e.get("msg", "")),
             "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if errors and all(e["loc"][:1] == ["path"] for e in errors):
            # An id of the wrong shape names nothing, like an id of the wrong kind: 404, not 422.
            return problem_response(404, "not_found", f"nothing at {_printable(request.url.path)}")
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        loc = first["loc"][1:] if first["loc"][:1] in (["body"], ["query"], ["header"], ["path"]) else first["loc"]
        where = ".".join(str(p) for p in loc) or "request"
        return problem_response(422, "validation_error", f"{where}: {first['msg']}", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _DEFAULT_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        from eventsourcing.persistence import OperationalError

        if isinstance(exc, OperationalError):
            return problem_response(503, "store_unavailable", "the event store is not reachable; retry",
                                    {"Retry-After": "5"})
        return problem_response(500, "internal", "an unexpected error occurred; it has been logged")


def _printable(value: object) -> object:
    """`value`, with any character no read model or client should get replaced by U+FFFD (strings only)."""
    return FORBIDDEN.sub("\ufffd", value) if isinstance(value, str) else value
