"""The project's own fuzzing (issue 12, item 11): schemathesis against the OpenAPI, with a customer and an admin token.

schemathesis' engine (what `st run` drives) runs its coverage phase (boundary and invalid values from each
schema), its fuzzing phase (generated requests) and its stateful phase (sequences that feed one answer's ids
into the next request, from the links it infers) against the ASGI app, on PostgreSQL, which refuses the
most (NUL in TEXT, the range of a timestamp). Every answer must be no server error and conform to the
document: its status code documented, its content type and body as stated. The OpenAPI states the
real constraints (api/schemas.py, api/openapi.py), so generated data gets past validation and reaches
the use cases.

Runtime is bounded and reproducible: a fixed seed, deterministic generation, fixed example counts, no
per-example deadline. Each finding was fixed with a regression test in test_fuzz_findings.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from api.app import create_app
from services.bootstrap import Container
from tests.billing_fixtures import SECRET
from tests.integration.conftest import ADMIN_TOKEN, auth

SEED = 20261201
#: Examples per operation in the fuzzing phase and per step budget in the stateful phase.
MAX_EXAMPLES = 5
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
#: Operations a customer token is never allowed (403 whatever is sent): fuzzed with the admin token; the others
#: with the customer's (what an admin may do there is what a customer may do, on anyone's resources).
ADMIN_ONLY = "^/api/admin/"


def run_schemathesis(app: Any, token: str, *, admin_routes: bool) -> list[str]:
    """Every failure or error the engine reports, as readable lines (empty: the API held)."""
    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {token}"},
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": True},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": True}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema = schema.include(path_regex=ADMIN_ONLY) if admin_routes else schema.exclude(path_regex=ADMIN_ONLY)
    problems: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {type(event.value).__name__}: {event.value}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status.name != "FAILURE":
                        continue
                    case = recorder.cases[case_id].value
                    title = check.failure_info.failure.title if check.failure_info else ""
                    problems.append(f"{check.name}: {case.method} {case.formatted_path} query={case.query} "
                                    f"body={str(case.body)[:300]!r}: {title}")
    return problems


@pytest.fixture
def fuzzed_app(make_container: Callable[..., Container]) -> Any:
    # Limits are raised so the fuzzer reaches the use cases rather than 429 (they have their own tests);
    # with the webhook secret set, the webhook verifies signatures rather than failing closed with 503.
    container = make_container(workers=("projections", "provisioning", "schedules", "billing", "repair"),
                               stripe_webhook_secret=SECRET, rate_limit_per_minute=1_000_000,
                               auth_failures_per_minute=1_000_000)
    return create_app(container)


@pytest.mark.real_services
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(fuzzed_app: Any) -> None:
    with TestClient(fuzzed_app) as client:  # the lifespan runs: the API's own background work is up
        made = client.post("/api/admin/users", json={"email": "fuzz@example.com"}, headers=auth(ADMIN_TOKEN))
        assert made.status_code == 201, made.text
        customer = made.json()["token"]
        problems = run_schemathesis(fuzzed_app, customer, admin_routes=False)
        problems += run_schemathesis(fuzzed_app, ADMIN_TOKEN, admin_routes=True)
    assert not problems, "\n".join(problems)
