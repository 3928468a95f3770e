"""The provisioning process manager: follows the log and executes queued operations.

Dispatch: it reads `Operation.Requested` events after its position and claims each
queued operation by appending `Operation.Claimed`. The store's optimistic
concurrency lets exactly one claim win, so any number of provisioning workers on
one PostgreSQL never run an operation twice. The shared position only moves
forward, and only past events whose operation some worker already claimed (or
that are no longer queued), so a restart re-reads at most a page and claims nothing twice.

Execution: each step records its intent (`StepStarted`), calls the driver, and
records its result (`StepSucceeded`); a failed step fails the operation with the
driver's error code. Nothing is retried. If another writer appended to the
operation meanwhile (the controller failing it as stale, say), the next save
conflicts and this worker stops touching it at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.instance import Instance
from domain.operation import Operation, OperationKind, Phase
from domain.plans import create_steps
from projections.db import ReadModelDB
from projections.runner import advance_position
from services.ports import DriverError, InstanceDriver, InstanceSpec
from services.store import ZLH

log = logging.getLogger(__name__)

POSITION = "provisioning"


class FencedError(Exception):
    """Someone else wrote to the operation: this worker must stop acting on it."""


class ProvisioningManager:
    def __init__(
        self,
        app: ZLH,
        db: ReadModelDB,
        driver: InstanceDriver,
        worker_id: str,
        step_delay: float = 0.0,
        connect_timeout: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        self.app, self.db, self.driver = app, db, driver
        self.worker_id = worker_id
        self.step_delay = step_delay
        self.connect_timeout = connect_timeout
        self.stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="zlh-provision")
        self._active: set[UUID] = set()
        self._active_lock = threading.Lock()

    # Dispatch.

    def position(self) -> int:
        rows = self.db.query("SELECT position FROM zlh_positions WHERE name = %s", (POSITION,))
        return int(rows[0]["position"]) if rows else 0

    def dispatch_page(self, limit: int = 200) -> int:
        """Claim the queued operations of the next page and start them; return events read."""
        page = self.app.recorder.select_notifications(
            start=self.position(), limit=limit, inclusive_of_start=False
        )
        for notification in page:
            if notification.topic == Operation.Requested.TOPIC and self.claim(notification.originator_id):
                self._submit(notification.originator_id)
        if page:
            with self.db.transaction() as cur:
                advance_position(cur, POSITION, page[-1].id)
        return len(page)

    def claim(self, operation_id: UUID) -> bool:
        """Append `Claimed` if the operation is still queued; True if this worker won it."""
        operation: Operation = self.app.repository.get(operation_id)
        if operation.phase is not Phase.QUEUED:
            return False
        operation.claim(self.worker_id)
        try:
            self.app.save(operation)
        except IntegrityError:
            return False  # another worker claimed it first
        return True

    def _submit(self, operation_id: UUID) -> None:
        with self._active_lock:
            self._active.add(operation_id)
        future = self._pool.submit(self.execute, operation_id)
        future.add_done_callback(lambda _: self._done(operation_id))

    def _done(self, operation_id: UUID) -> None:
        with self._active_lock:
            self._active.discard(operation_id)

    def run(self, wait_for_events: Any) -> None:
        """Dispatch until stopped."""
        backoff = 0.1
        while not self.stop_event.is_set():
            try:
                while not self.stop_event.is_set() and self.dispatch_page():
                    pass
                backoff = 0.1
                wait_for_events(1.0)
            except Exception:
                log.exception("provisioning dispatch failed; retrying in %.1fs", backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def stop(self, wait: bool = True) -> None:
        self.stop_event.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # Execution.

    def execute(self, operation_id: UUID) -> None:
        """Run a claimed operation to its end. Never raises; failures are recorded."""
        try:
            operation: Operation = self.app.repository.get(operation_id)
            if operation.kind is OperationKind.CREATE:
                self._create(operation)
            else:
                self._fail(operation, "unsupported_operation", f"{operation.kind} is not supported yet")
        except FencedError:
            log.warning("operation %s was changed by someone else; stopped acting on it", operation_id)
        except Exception:
            log.exception("operation %s crashed", operation_id)
            try:
                self._fail(self.app.repository.get(operation_id), "internal", "the worker crashed")
            except Exception:
                log.exception("could not record the failure of %s", operation_id)

    def _create(self, operation: Operation) -> None:
        instance: Instance = self.app.repository.get(operation.instance_id)
        spec = InstanceSpec(instance.id, instance.kind.value, instance.template, instance.edge_name)
        port = 0
        for step in create_steps(instance.kind):
            if self.step_delay and self.stop_event.wait(self.step_delay):
                return  # shutting down: leave the operation where it is (the controller sees it stale)
            intent: dict[str, Any] = {"port": port} if port else {}
            self._record(operation, lambda op, s=step, i=intent: op.start_step(s, i))
            try:
                result = self._run_step(step, spec, port)
            except DriverError as exc:
                self._fail(operation, exc.code, exc.message)
                return
            port = int(result.get("port", port))
            self._record(operation, lambda op, s=step, r=result: op.finish_step(s, r))
        address = self.driver.address(spec, port)
        operation.succeed({"port": port, "address": address})
        instance.provision(operation.id, port, address)
        self._save(operation, instance)

    def _run_step(self, step: str, spec: InstanceSpec, port: int) -> dict[str, Any]:
        driver = self.driver
        if step == "allocate_port":
            return {"port": driver.allocate_port(spec)}
        if step == "create_directory":
            return {"path": driver.create_directory(spec)}
        if step == "start_process":
            return {"pid": driver.start_process(spec, port)}
        if step == "wait_connectable":
            driver.wait_connectable(spec, port, self.connect_timeout)
            return {}
        if step == "publish_dns":
            return {"record": driver.publish_dns(spec, port)}
        if step == "publish_proxy":
            return {"target": driver.publish_proxy(spec, port)}
        raise DriverError("unknown_step", f"no such step: {step}")

    def _record(self, operation: Operation, command: Any) -> None:
        command(operation)
        self._save(operation)

    def _fail(self, operation: Operation, code: str, message: str) -> None:
        instance: Instance = self.app.repository.get(operation.instance_id)
        operation.fail(code, message)
        try:
            instance.fail_operation(operation.id, operation.kind.value, code)
        except DomainError:
            self._save(operation)
            return
        self._save(operation, instance)

    def _save(self, *aggregates: Any) -> None:
        try:
            self.app.save(*aggregates)
        except IntegrityError as exc:
            raise FencedError(str(exc)) from exc
