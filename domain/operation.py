"""The `Operation` aggregate: a durable, pollable long-running operation.

Phases: `queued -> running -> succeeded | failed`. A worker claims a queued
operation by appending `Claimed`; optimistic concurrency lets exactly one claim
win. Every external step is bracketed by an intent event (`StepStarted`) and a
result event (`StepSucceeded` / the operation's `Failed`), so a crash leaves a
record of exactly where it stopped. Nothing here retries.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import IllegalTransitionError, OperationNotClaimableError
from domain.ids import operation_id_for_key


class OperationKind(StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    BACKUP = "backup"
    RESTORE = "restore"
    DELETE = "delete"
    DELETE_BACKUP = "delete_backup"
    MOVE = "move"


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Operation(Aggregate):
    TOPIC = "zlh.Operation"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Operation.Event"

    class Requested(Event, Aggregate.Created):
        """`fingerprint` identifies the request body, for Idempotency-Key replays. `owner_id` is the instance's
        owner (the operation runs as them); `actor_id` is who asked (an operator, a schedule's owner), `origin`
        what asked when it was not a person directly (`schedule_run:ID`, `billing`). Events recorded before
        these two fields existed decode with None: the owner asked."""

        TOPIC = "zlh.Operation.Requested"
        request_key: str
        kind: str
        instance_id: UUID
        owner_id: UUID
        fingerprint: str
        params: dict[str, Any]
        actor_id: UUID | None = None
        origin: str | None = None

    class Claimed(Event):
        TOPIC = "zlh.Operation.Claimed"
        worker_id: str

    class StepStarted(Event):
        TOPIC = "zlh.Operation.StepStarted"
        step: str
        intent: dict[str, Any]

    class StepSucceeded(Event):
        TOPIC = "zlh.Operation.StepSucceeded"
        step: str
        result: dict[str, Any]

    class Succeeded(Event):
        TOPIC = "zlh.Operation.Succeeded"
        result: dict[str, Any]

    class Failed(Event):
        TOPIC = "zlh.Operation.Failed"
        code: str
        message: str
        step: str | None

    @staticmethod
    def create_id(owner_id: UUID, request_key: str) -> UUID:
        """One operation per (caller, Idempotency-Key), forever."""
        return operation_id_for_key(owner_id, request_key)

    @event(Requested)
    def __init__(
        self,
        request_key: str,
        kind: str,
        instance_id: UUID,
        owner_id: UUID,
        fingerprint: str,
        params: dict[str, Any],
        actor_id: UUID | None = None,
        origin: str | None = None,
    ) -> None:
        self.request_key = request_key
        self.kind = OperationKind(kind)
        self.instance_id = instance_id
        self.owner_id = owner_id
        self.fingerprint = fingerprint
        self.params = params
        self.actor_id = actor_id if actor_id is not None else owner_id
        self.origin = origin
        self.phase = Phase.QUEUED
        self.worker_id: str | None = None
        self.steps: list[dict[str, Any]] = []
        self.error: dict[str, str] | None = None
        self.result: dict[str, Any] = {}

    @property
    def is_pending(self) -> bool:
        return self.phase in (Phase.QUEUED, Phase.RUNNING)

    @property
    def open_step(self) -> str | None:
        """The step whose intent is recorded but whose result is not."""
        if self.steps and self.steps[-1]["status"] == "started":
            return self.steps[-1]["name"]
        return None

    @property
    def stopped_process(self) -> bool:
        """Whether this operation's last completed process step was a stop (a start may have failed since)."""
        process_steps = [s["name"] for s in self.steps
                         if s["status"] == "succeeded" and s["name"] in ("stop_process", "start_process")]
        return bool(process_steps) and process_steps[-1] == "stop_process"

    # Commands.

    def claim(self, worker_id: str) -> None:
        if self.phase is not Phase.QUEUED:
            raise OperationNotClaimableError(f"operation is {self.phase}, not queued")
        self._claimed(worker_id=worker_id)

    def start_step(self, step: str, intent: dict[str, Any]) -> None:
        self._require_running()
        if self.open_step is not None:
            raise IllegalTransitionError(f"step {self.open_step} has not finished")
        self._step_started(step=step, intent=intent)

    def finish_step(self, step: str, result: dict[str, Any]) -> None:
        self._require_running()
        if self.open_step != step:
            raise IllegalTransitionError(f"step {step} is not the open step")
        self._step_succeeded(step=step, result=result)

    def succeed(self, result: dict[str, Any]) -> None:
        self._require_running()
        if self.open_step is not None:
            raise IllegalTransitionError(f"step {self.open_step} has not finished")
        self._succeeded(result=result)

    def fail(self, code: str, message: str) -> None:
        if not self.is_pending:
            raise IllegalTransitionError(f"operation already {self.phase}")
        self._failed(code=code, message=message, step=self.open_step)

    def _require_running(self) -> None:
        if self.phase is not Phase.RUNNING:
            raise IllegalTransitionError(f"operation is {self.phase}, not running")

    @event(Claimed)
    def _claimed(self, worker_id: str) -> None:
        self.phase = Phase.RUNNING
        self.worker_id = worker_id

    @event(StepStarted)
    def _step_started(self, step: str, intent: dict[str, Any]) -> None:
        self.steps.append({"name": step, "status": "started", "intent": intent, "result": None})

    @event(StepSucceeded)
    def _step_succeeded(self, step: str, result: dict[str, Any]) -> None:
        self.steps[-1] = {**self.steps[-1], "status": "succeeded", "result": result}

    @event(Succeeded)
    def _succeeded(self, result: dict[str, Any]) -> None:
        self.phase = Phase.SUCCEEDED
        self.result = result

    @event(Failed)
    def _failed(self, code: str, message: str, step: str | None) -> None:
        if step is not None:
            self.steps[-1] = {**self.steps[-1], "status": "failed"}
        self.phase = Phase.FAILED
        self.error = {"code": code, "message": message}
