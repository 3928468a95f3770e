"""The OpenAPI document as the API really behaves: problem documents for errors, bearer authentication.

FastAPI documents a 422 `HTTPValidationError` shape that this API never sends (api/problems.py turns
validation errors into problem JSON) and no other error. Clients and the project's own fuzzing
(schemathesis, tests/integration/test_fuzz_openapi.py) check answers against this document, so every
operation states the problem document for its 4xx answers, the `RateLimit-*` headers of a 429, and the
bearer scheme of the `/api` routes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
    },
    "additionalProperties": True,
}

#: What the routes accept, stated in the document (the routes check it themselves, with their own problem codes).
IDEMPOTENCY_KEY = {"minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$",
                   "description": "1-255 printable ASCII characters (else 400 idempotency_key_invalid)"}
IF_MATCH = {"maxLength": 24, "pattern": '^ *(?:(?:W/)?"[0-9]{1,18}"|[0-9]{1,18}) *$',
            "description": "the note's version: 1-18 digits, may be quoted (else 400 bad_if_match)"}
FILE_PATH = {"maxLength": 4096}
STRIPE_SIGNATURE = {"maxLength": 4096, "description": "t=TIMESTAMP,v1=SIGNATURE (else 400 bad_signature)"}
#: The optional `Idempotency-Key` header of the routes that start an operation.
KeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", json_schema_extra=IDEMPOTENCY_KEY)]

_PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_CLIENT_ERROR = {"description": "A problem document (bad request, authentication, permission, not found, conflict, "
                                "validation, too large, rate limited, ...)", "content": _PROBLEM_CONTENT}
#: Routes that take no bearer token: the probes, the Stripe webhook (signed instead), the console socket's ticket.
_PUBLIC = ("/healthz", "/readyz", "/metrics", "/api/billing/stripe/webhook")


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter that may be absent is `{"anyOf": [X, null]}` in FastAPI's output; a header or query value is
    never JSON null, so state X (with the constraints beside it) and let `required: false` say it may be absent."""
    options = schema.get("anyOf")
    if not options or len(options) != 2 or {"type": "null"} not in options:
        return schema
    (kept,) = [o for o in options if o != {"type": "null"}]
    return {**{k: v for k, v in schema.items() if k != "anyOf"}, **kept}


def _document(app: FastAPI) -> dict[str, Any]:
    schema = FastAPI.openapi(app)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            for parameter in operation.get("parameters", []):
                parameter["schema"] = _without_null(parameter.get("schema", {}))
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["4XX"] = _CLIENT_ERROR
            if path.startswith("/api/") and path not in _PUBLIC:
                operation["security"] = [{"bearer": []}]
    return schema


def install(app: FastAPI) -> None:
    """Replace `app.openapi` with the document above (built once, then cached like FastAPI's own)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
