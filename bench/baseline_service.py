"""The plain service of issue 13: FastAPI + one psycopg `ConnectionPool` on PostgreSQL, nothing else.

It is the yardstick `python -m bench.compare` measures `zlh serve` against: the same shape of work as
the project's routes, done the most direct way, served by uvicorn with the arguments `zlh serve`
passes (`api/cli.py`: one process, `log_level="info"`, `log_config=None`; uvicorn's defaults
otherwise, so uvloop and httptools when installed):

- `GET /healthz`: a sync constant endpoint (like the project's, it runs in the threadpool);
- `GET /api/instances`: token lookup by SHA-256 hash in a tokens table, then the owner's rows from an
  instances table, as a JSON list;
- `GET /api/operations/{id}`: token lookup, then one row;
- `POST /api/instances`: token lookup, then one INSERT and COMMIT; 202 with the ids.

Each request borrows one connection of one pool (4 to 8 connections) for all its statements. At start
it creates its tables (`baseline_*`, in the database it is given, meant to be a throwaway one) and
seeds one user with a fresh token and 3 instances, each with its create operation; the token and ids
go to `--seed-out` as JSON before the server starts listening.

    python -m bench.baseline_service --database-url postgresql://postgres@127.0.0.1/db --port 8001 \\
        --seed-out /tmp/seed.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import FastAPI, Header, HTTPException
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

POOL_MIN, POOL_MAX = 4, 8

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS baseline_tokens (token_hash text PRIMARY KEY, user_id uuid NOT NULL, "
    "admin boolean NOT NULL DEFAULT false)",
    "CREATE TABLE IF NOT EXISTS baseline_instances (id uuid PRIMARY KEY, owner_id uuid NOT NULL, "
    "kind text NOT NULL, name text NOT NULL, template text NOT NULL, status text NOT NULL, address text, "
    "pending_operation_id uuid, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)",
    "CREATE INDEX IF NOT EXISTS baseline_instances_owner ON baseline_instances (owner_id, created_at)",
    "CREATE TABLE IF NOT EXISTS baseline_operations (id uuid PRIMARY KEY, owner_id uuid NOT NULL, "
    "request_key text NOT NULL, kind text NOT NULL, instance_id uuid NOT NULL, phase text NOT NULL, "
    "params jsonb NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, "
    "UNIQUE (owner_id, request_key))",
)

TOKEN_SQL = "SELECT user_id, admin FROM baseline_tokens WHERE token_hash = %s"
LIST_SQL = ("SELECT id, kind, name, template, status, address, pending_operation_id, created_at, updated_at "
            "FROM baseline_instances WHERE owner_id = %s AND status <> 'deleted' ORDER BY created_at DESC, id")
OPERATION_SQL = ("SELECT id, owner_id, kind, instance_id, phase, created_at, updated_at "
                 "FROM baseline_operations WHERE id = %s")
INSERT_SQL = ("INSERT INTO baseline_operations (id, owner_id, request_key, kind, instance_id, phase, params, "
              "created_at, updated_at) VALUES (%s, %s, %s, 'create', %s, 'queued', %s, now(), now())")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_schema(conn: psycopg.Connection[Any]) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def seed(conn: psycopg.Connection[Any], instances: int = 3) -> dict[str, Any]:
    """One user with a fresh token and `instances` instances (each with its queued create operation)."""
    token = "base_" + secrets.token_urlsafe(32)
    user_id = uuid.uuid4()
    conn.execute("INSERT INTO baseline_tokens (token_hash, user_id) VALUES (%s, %s)", (token_hash(token), user_id))
    operation_ids, instance_ids = [], []
    for i in range(instances):
        operation_id, instance_id = uuid.uuid4(), uuid.uuid4()
        params = json.dumps({"kind": "game", "name": f"seed{i}", "template": "minecraft"})
        conn.execute(INSERT_SQL, (operation_id, user_id, f"seed-{i}", instance_id, params))
        conn.execute(
            "INSERT INTO baseline_instances (id, owner_id, kind, name, template, status, pending_operation_id, "
            "created_at, updated_at) VALUES (%s, %s, 'game', %s, 'minecraft', 'provisioning', %s, now(), now())",
            (instance_id, user_id, f"seed{i}", operation_id))
        operation_ids.append(str(operation_id))
        instance_ids.append(str(instance_id))
    return {"token": token, "user_id": str(user_id), "operation_ids": operation_ids, "instance_ids": instance_ids}


class CreateInstance(BaseModel):
    kind: str
    name: str
    template: str


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def create_app(conninfo: str) -> FastAPI:
    pool = ConnectionPool(conninfo, min_size=POOL_MIN, max_size=POOL_MAX, open=False,
                          kwargs={"row_factory": dict_row})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=True)
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="baseline", lifespan=lifespan)

    def caller(conn: psycopg.Connection[Any], authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "send Authorization: Bearer TOKEN")
        row = conn.execute(TOKEN_SQL, (token_hash(token.strip()),)).fetchone()
        if row is None:
            raise HTTPException(401, "the bearer token is not valid")
        return row

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/instances")
    def list_instances(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        with pool.connection() as conn:
            user = caller(conn, authorization)
            rows = conn.execute(LIST_SQL, (user["user_id"],)).fetchall()
        items = [{"id": str(r["id"]), "kind": r["kind"], "name": r["name"], "template": r["template"],
                  "status": r["status"], "address": r["address"],
                  "pending_operation_id": str(r["pending_operation_id"]) if r["pending_operation_id"] else None,
                  "created_at": _iso(r["created_at"]), "updated_at": _iso(r["updated_at"])} for r in rows]
        return {"items": items, "next_cursor": None}

    @app.get("/api/operations/{operation_id}")
    def get_operation(operation_id: uuid.UUID,
                      authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        with pool.connection() as conn:
            user = caller(conn, authorization)
            row = conn.execute(OPERATION_SQL, (operation_id,)).fetchone()
        if row is None or (row["owner_id"] != user["user_id"] and not user["admin"]):
            raise HTTPException(404, "no such operation")
        return {"id": str(row["id"]), "kind": row["kind"], "instance_id": str(row["instance_id"]),
                "phase": row["phase"], "error": None, "created_at": _iso(row["created_at"]),
                "updated_at": _iso(row["updated_at"])}

    @app.post("/api/instances", status_code=202)
    def create_instance(body: CreateInstance, authorization: Annotated[str | None, Header()] = None,
                        idempotency_key: Annotated[str | None, Header()] = None) -> dict[str, str]:
        if not idempotency_key:
            raise HTTPException(400, "send an Idempotency-Key header")
        operation_id, instance_id = uuid.uuid4(), uuid.uuid4()
        with pool.connection() as conn:  # commits when the block ends
            user = caller(conn, authorization)
            try:
                conn.execute(INSERT_SQL, (operation_id, user["user_id"], idempotency_key, instance_id,
                                          body.model_dump_json()))
            except psycopg.errors.UniqueViolation as exc:
                raise HTTPException(409, "this Idempotency-Key was already used") from exc
        return {"operation_id": str(operation_id), "instance_id": str(instance_id),
                "status_url": f"/api/operations/{operation_id}"}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.baseline_service", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL URL (a throwaway database)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--seed-out", type=Path, help="write the seeded token and ids here as JSON")
    args = parser.parse_args(argv)

    with psycopg.connect(args.database_url) as conn:
        create_schema(conn)
        seeded = seed(conn)
    if args.seed_out is not None:
        tmp = args.seed_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(seeded))
        os.replace(tmp, args.seed_out)
    # The very arguments `zlh serve` gives uvicorn (api/cli.py).
    uvicorn.run(create_app(args.database_url), host=args.host, port=args.port, log_level="info", log_config=None)


if __name__ == "__main__":
    main()
