"""RFC 9457 problem details for every error, with a stable `code`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import DomainError
from services.ports import DriverError
from services.problem_documents import PROBLEM_JSON, problem_document

#: HTTP status for each domain error code; anything unlisted is a 409 conflict.
DOMAIN_STATUS = {
    "idempotency_key_reused": 422,
    "name_taken": 409,
    "operation_in_progress": 409,
    "email_taken": 409,
    "illegal_transition": 409,
    "unknown_template": 422,
    "not_found": 404,
    "version_conflict": 412,
    "too_large": 413,
    "invalid_window": 422,
    "tickets_exhausted": 503,
    "quota_exceeded": 409,
    "validation_error": 422,
    "token_revoked": 409,
    "cannot_disable_self": 409,
    "billing_suspended": 402,
    "backups_blocked": 402,
    "destructive_action_rejected": 403,
    "customer_linked_elsewhere": 409,
    "bad_signature": 400,
    "bad_payload": 400,
}

#: HTTP status for each driver (node agent) error code; anything unlisted is a 502 from upstream.
DRIVER_STATUS = {
    "bad_path": 400,
    "is_a_directory": 400,
    "not_a_directory": 400,
    "not_found": 404,
    "too_large": 413,
    "still_running": 409,
    "checksum_mismatch": 422,
    "agent_timeout": 504,
}

_DEFAULT_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                  413: "payload_too_large", 415: "unsupported_media_type"}


class Problem(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = problem_document(status, code, detail, **extra)
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.code, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem_response(DOMAIN_STATUS.get(exc.code, 409), exc.code, exc.message, exc.headers or None,
                                **exc.extra)

    @app.exception_handler(DriverError)
    async def _driver(_: Request, exc: DriverError) -> JSONResponse:
        return problem_response(DRIVER_STATUS.get(exc.code, 502), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
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
