"""Hypothesis: for any history, a projection rebuilt from position 0 equals the one built live."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from domain.errors import DomainError
from domain.instance import Instance
from domain.operation import Operation
from projections.registry import all_projections
from services.infrastructure.database import DatabaseURL, ReadModelDB
from services.infrastructure.migrations import migrate
from services.infrastructure.projection_runner import ProjectionRunner, rebuild_all
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance

OWNERS = [UUID(int=1), UUID(int=2)]
commands = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(OWNERS), st.sampled_from(["a", "b", "c"]),
                  st.sampled_from(["k1", "k2", "k3", "k4"])),
        st.tuples(st.just("claim"), st.integers(0, 5)),
        st.tuples(st.just("step"), st.integers(0, 5), st.sampled_from(["allocate_port", "start_process"])),
        st.tuples(st.just("provision"), st.integers(0, 5), st.integers(1024, 65535)),
        st.tuples(st.just("fail"), st.integers(0, 5)),
    ),
    max_size=25,
)


def table(db: ReadModelDB, name: str) -> list[dict]:
    """Every row, in a canonical order (not every table has an `id` column)."""
    return sorted(db.query(f"SELECT * FROM {name}"), key=lambda row: json.dumps(row, sort_keys=True, default=str))


def apply(app: ZLH, ops: list[UUID], command: tuple) -> None:
    kind = command[0]
    if kind == "create":
        _, owner, name, key = command
        with contextlib.suppress(DomainError):
            ops.append(request_instance(app, owner, key, "game", name, "minecraft").operation_id)
        return
    if not ops:
        return
    op: Operation = app.repository.get(ops[command[1] % len(ops)])
    instance: Instance = app.repository.get(op.instance_id)
    try:
        if kind == "claim":
            op.claim("w")
            app.save(op)
        elif kind == "step":
            op.start_step(command[2], {})
            op.finish_step(command[2], {"ok": True})
            app.save(op)
        elif kind == "provision":
            op.succeed({})
            instance.provision(op.id, command[2], f"127.0.0.1:{command[2]}")
            app.save(op, instance)
        elif kind == "fail":
            op.fail("boom", "failed")
            instance.fail_operation(op.id, op.kind.value, "boom")
            app.save(op, instance)
    except DomainError:
        pass


@given(commands, st.integers(1, 4))
def test_rebuild_from_zero_equals_live(history: list, catch_up_every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = DatabaseURL.parse(f"sqlite:///{Path(tmp)}/zlh.sqlite3")
        migrate(url)
        app, db = ZLH(env=store_env(url)), ReadModelDB(url)
        runners = [ProjectionRunner(app, db, p, page_size=3) for p in all_projections()]
        ops: list[UUID] = []
        try:
            for n, command in enumerate(history):
                apply(app, ops, command)
                if n % catch_up_every == 0:
                    for r in runners:
                        r.catch_up()  # live: built incrementally, interleaved with writes
            for r in runners:
                r.catch_up()
            live = {t.name: table(db, t.name) for r in runners for t in r.projection.tables}
            for r in runners:
                r.rebuild()
            rebuilt = {t.name: table(db, t.name) for r in runners for t in r.projection.tables}
            assert rebuilt == live
            assert all(r.position() == (app.head()) for r in runners)
            rebuild_all(runners, app, db, page_size=4)  # every projection from one read of the log
            assert {t.name: table(db, t.name) for r in runners for t in r.projection.tables} == live
            assert all(r.position() == (app.head()) for r in runners)
        finally:
            app.close()
            db.close()


def test_the_same_key_twice_makes_one_operation() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = DatabaseURL.parse(f"sqlite:///{Path(tmp)}/zlh.sqlite3")
        migrate(url)
        app = ZLH(env=store_env(url))
        owner = uuid4()
        first = request_instance(app, owner, "k", "game", "a", "minecraft")
        again = request_instance(app, owner, "k", "game", "a", "minecraft")
        assert first.operation_id == again.operation_id and again.replayed
        app.close()
