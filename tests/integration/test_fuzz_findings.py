"""Regression tests for what schemathesis found (tests/integration/test_fuzz_openapi.py), one per finding."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from api.consistency import HEADER as RYW
from tests.integration.test_api import assert_problem


def test_withdrawing_an_announcement_twice_is_204_not_500(client: TestClient, admin: dict[str, str]) -> None:
    """Found by the coverage phase: the second DELETE saved no event, and `app.save(...)[-1]` raised IndexError."""
    made = client.post("/api/admin/announcements", json={"level": "info", "title": "t", "body": "b"}, headers=admin)
    assert made.status_code == 201, made.text
    url = f"/api/admin/announcements/{made.json()['id']}"
    for _ in range(2):
        r = client.delete(url, headers=admin)
        assert r.status_code == 204, r.text
        assert r.headers[RYW] == "caught-up"
    assert client.get("/api/admin/announcements", headers=admin).json()["items"][0]["id"] == made.json()["id"]
    assert_problem(client.delete("/api/admin/announcements/00000000-0000-0000-0000-000000000000", headers=admin),
                   404, "not_found")


def test_the_openapi_states_the_real_constraints(client: TestClient) -> None:
    """The fuzzer reaches the logic only if the document says what passes validation; errors are problem JSON."""
    spec: dict[str, Any] = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["responses"]["4XX"]["content"]["application/problem+json"], (method, path)
            assert "422" not in operation["responses"], (method, path)
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert "anyOf" not in schema, (method, path, parameter["name"])
                if schema.get("type") == "string":
                    assert {"maxLength", "enum", "pattern", "format"} & set(schema), (method, path, parameter)
    create = spec["paths"]["/api/instances"]["post"]
    key = next(p for p in create["parameters"] if p["name"].lower() == "idempotency-key")["schema"]
    assert key["maxLength"] == 255 and key["minLength"] == 1
    assert create["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/api/billing/stripe/webhook"]["post"]
