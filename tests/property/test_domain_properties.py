"""Hypothesis: replay rebuilds the same aggregate; no command sequence breaks the invariants."""

from __future__ import annotations

import contextlib
from uuid import UUID, uuid4

from eventsourcing.application import Application
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.errors import DomainError
from domain.instance import Instance
from domain.lifecycle import TRANSITIONS, InstanceStatus
from domain.operation import Operation, Phase

STEPS = ["allocate_port", "create_directory", "start_process", "wait_connectable"]


def state(aggregate: object) -> dict:
    return {k: v for k, v in vars(aggregate).items() if not k.startswith("_")}


@st.composite
def operation_histories(draw: st.DrawFn) -> list[tuple[str, tuple]]:
    """A random sequence of commands on an operation (legal or not)."""
    commands = st.one_of(
        st.tuples(st.just("claim"), st.tuples(st.sampled_from(["w1", "w2"]))),
        st.tuples(st.just("start_step"), st.tuples(st.sampled_from(STEPS), st.fixed_dictionaries({}))),
        st.tuples(st.just("finish_step"), st.tuples(st.sampled_from(STEPS), st.fixed_dictionaries(
            {"port": st.integers(1, 65535)}))),
        st.tuples(st.just("succeed"), st.tuples(st.fixed_dictionaries({}))),
        st.tuples(st.just("fail"), st.tuples(st.sampled_from(["a", "b"]), st.text(max_size=10))),
    )
    return draw(st.lists(commands, max_size=15))


@given(operation_histories())
def test_replaying_an_operation_stream_rebuilds_the_same_aggregate(history: list) -> None:
    app = Application[UUID]()
    op = Operation(request_key="k", kind="create", instance_id=uuid4(), owner_id=uuid4(), fingerprint="f",
                   params={"name": "x"})
    for name, args in history:
        with contextlib.suppress(DomainError):
            getattr(op, name)(*args)
    app.save(op)
    replayed = app.repository.get(op.id)
    assert state(replayed) == state(op)
    assert replayed.version == op.version
    app.close()


class InstanceMachine(RuleBasedStateMachine):
    """Random create/claim/step/finish/fail/begin commands on one instance and its operations."""

    def __init__(self) -> None:
        super().__init__()
        self.app = Application[UUID]()
        owner = uuid4()
        create_op = Operation(request_key="create", kind="create", instance_id=uuid4(), owner_id=owner,
                              fingerprint="f", params={})
        self.instance = Instance(owner_id=owner, kind="game", name="a", template="minecraft",
                                 edge_name="a-1", operation_id=create_op.id)
        self.operations: dict[UUID, Operation] = {create_op.id: create_op}
        self.statuses = [self.instance.status]

    def _pending(self) -> Operation | None:
        pid = self.instance.pending_operation_id
        return self.operations.get(pid) if pid else None

    @rule(kind=st.sampled_from(["start", "stop", "restart", "backup", "delete"]))
    def begin(self, kind: str) -> None:
        op = Operation(request_key=str(uuid4()), kind=kind, instance_id=self.instance.id,
                       owner_id=self.instance.owner_id, fingerprint="f", params={})
        try:
            self.instance.begin_operation(op.id, kind)
        except DomainError:
            return
        self.operations[op.id] = op

    @precondition(lambda self: self._pending() is not None)
    @rule(worker=st.sampled_from(["w1", "w2"]))
    def claim(self, worker: str) -> None:
        with contextlib.suppress(DomainError):
            self._pending().claim(worker)

    @precondition(lambda self: self._pending() is not None)
    @rule(port=st.integers(1024, 65535))
    def succeed(self, port: int) -> None:
        op = self._pending()
        try:
            op.succeed({})
            if op.kind.value == "create":
                self.instance.provision(op.id, port, f"127.0.0.1:{port}")
            else:
                self.instance.fail_operation(op.id, op.kind.value, "unsupported")
        except DomainError:
            return
        self.statuses.append(self.instance.status)

    @precondition(lambda self: self._pending() is not None)
    @rule(code=st.sampled_from(["not_connectable", "interrupted"]))
    def fail(self, code: str) -> None:
        op = self._pending()
        try:
            op.fail(code, "x")
            self.instance.fail_operation(op.id, op.kind.value, code)
        except DomainError:
            return
        self.statuses.append(self.instance.status)

    @invariant()
    def at_most_one_pending_operation(self) -> None:
        pending = [o for o in self.operations.values() if o.phase in (Phase.QUEUED, Phase.RUNNING)]
        assert len(pending) <= 1
        if pending:
            assert self.instance.pending_operation_id == pending[0].id

    @invariant()
    def statuses_follow_the_machine(self) -> None:
        for before, after in zip(self.statuses, self.statuses[1:], strict=False):
            assert before == after or after in TRANSITIONS[before]

    @invariant()
    def replay_matches(self) -> None:
        self.app.save(self.instance, *self.operations.values())
        assert state(self.app.repository.get(self.instance.id)) == state(self.instance)
        assert self.instance.status in set(InstanceStatus)

    def teardown(self) -> None:
        self.app.close()


TestInstanceMachine = InstanceMachine.TestCase
