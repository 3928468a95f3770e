"""`/metrics` behind a bearer token read from a file (`ZLH_METRICS_TOKEN_FILE`), for the API and the controller.

The metrics carry no customer data, but they do tell how busy the service is and which nodes and
queues struggle: an operator who cannot keep the port private (ops/monitoring.md) sets a token that
Prometheus sends from its own file (`authorization: {credentials_file: ...}`). The file is read at
every scrape, so a rotation needs no restart; a file that cannot be read refuses every scrape (fail
closed) rather than opening the metrics. The token is compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

from api.problems import problem_response
from services.settings import Settings

log = logging.getLogger(__name__)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def _expected(path: str) -> bytes | None:
    try:
        token = Path(path).read_bytes().strip()
    except OSError as exc:
        log.error("ZLH_METRICS_TOKEN_FILE %s cannot be read (%s): every scrape is refused", path,
                  type(exc).__name__)
        return None
    if not token:
        log.error("ZLH_METRICS_TOKEN_FILE %s is empty: every scrape is refused", path)
        return None
    return token


def refuse_scrape(settings: Settings, request: Request) -> JSONResponse | None:
    """None when the scrape may go on; else the 401 problem document to answer with."""
    if not settings.metrics_token_file:
        return None
    expected = _expected(settings.metrics_token_file)
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        return problem_response(401, "unauthorized", "send Authorization: Bearer with the metrics token", _CHALLENGE)
    # Compare even when nothing is expected, so that the answer takes the same time either way.
    matches = hmac.compare_digest(given.strip().encode("latin-1", "replace"), expected or b"\0")
    if scheme.lower() != "bearer" or expected is None or not matches:
        return problem_response(401, "unauthorized", "the metrics token is not valid", _CHALLENGE)
    return None
