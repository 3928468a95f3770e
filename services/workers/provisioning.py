"""The provisioning process manager: follows the log and executes queued operations.

Dispatch: it reads `Operation.Requested` events after its position and claims each
queued operation by appending `Operation.Claimed`. The store's optimistic
concurrency lets exactly one claim win, so any number of provisioning workers on
one PostgreSQL never run an operation twice. The shared position only moves
forward, and only past events whose operation some worker already claimed (or
that are no longer queued), so a restart re-reads at most a page and claims nothing twice.

Claiming is bounded: the dispatcher claims an operation only when one of its `concurrency` slots is
free, and otherwise waits before that event (its position stays there). With 10,000 operations
queued it holds at most `concurrency` of them: nothing is claimed, loaded or kept in memory ahead of
the work, and the API's writes do not share the store with a burst of claims. The backlog shows as
the `provisioning` queue's lag and its pending count (`GET /api/admin/queues`).

Execution: each step records its intent (`StepStarted`), calls the driver, and
records its result (`StepSucceeded`); a failed step fails the operation with the
driver's error code. Nothing is retried. If another writer appended to the
operation meanwhile (the controller failing it as stale, say), the next save
conflicts and this worker stops touching it at once.

Offsite backups (`offsite`, an `ObjectStore` that presigns: S3): after `create_backup` the node uploads its
archive over presigned part URLs (`upload_backup`: intent with the upload id, result with the key and parts),
this worker completes the multipart upload and checks its size, then the node's copy is removed. A restore
hands the node a presigned GET (never recorded: it is a credential); a deletion removes the object.
Retention (`retention`: automatic backups kept per server) prunes the oldest automatic ones after each
backup, inside the same operation (`prune_backups` step, `Backup.Pruned` events).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification

from domain.backup import Backup, backup_id_for_operation
from domain.errors import DomainError
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.name_claim import NameClaim
from domain.operation import Operation, OperationKind, Phase
from domain.plans import FINALIZER_STEPS, POWER_STEPS, create_steps, restore_steps
from domain.quota import BACKUPS, INSTANCES
from services.backup_policy import retention_of
from services.billing import operation_block
from services.edge import Edge
from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import FollowingPausedError, LogFollower, Wakeup
from services.infrastructure.logs import operation_context
from services.infrastructure.store import ZLH
from services.infrastructure.templates import TemplateCatalogue, shipped_catalogue
from services.ports import DriverError, InstanceDriver, InstanceSpec, ObjectStore, StorageError
from services.quotas import free_slot, release

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
        edge: Edge,
        worker_id: str,
        step_delay: float = 0.0,
        connect_timeout: float = 30.0,
        concurrency: int = 1,
        templates: TemplateCatalogue | None = None,
        offsite: ObjectStore | None = None,
        retention: int | None = None,
    ) -> None:
        self.app, self.db, self.driver, self.edge = app, db, driver, edge
        self.offsite = offsite
        self.retention = retention
        self.templates = templates or shipped_catalogue()
        self.worker_id = worker_id
        self.step_delay = step_delay
        self.connect_timeout = connect_timeout
        self.stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="zlh-provision")
        self.concurrency = concurrency
        self._active: set[UUID] = set()
        self._active_lock = threading.Condition()
        self.follower = LogFollower(POSITION, app, db, self._dispatch, topics={Operation.Requested.TOPIC})

    # Dispatch.

    def position(self) -> int:
        return self.follower.position()

    def dispatch_page(self) -> int:
        """Claim the queued operations of the next page and start them; return events read."""
        return self.follower.process_page()

    def _dispatch(self, notification: Notification) -> None:
        self._wait_for_a_slot()
        if self.claim(notification.originator_id):
            self._submit(notification.originator_id)

    def _wait_for_a_slot(self) -> None:
        """Block until fewer than `concurrency` operations run here; `FollowingPausedError` when stopping."""
        with self._active_lock:
            while len(self._active) >= self.concurrency:
                if self.stop_event.is_set():
                    raise FollowingPausedError("provisioning is stopping")
                self._active_lock.wait(1.0)
        if self.stop_event.is_set():
            raise FollowingPausedError("provisioning is stopping")

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

    def active_operations(self) -> set[UUID]:
        """The operations this manager is executing now (for heartbeats)."""
        with self._active_lock:
            return set(self._active)

    def _submit(self, operation_id: UUID) -> None:
        with self._active_lock:
            self._active.add(operation_id)
        future = self._pool.submit(self.execute, operation_id)
        future.add_done_callback(lambda _: self._done(operation_id))

    def _done(self, operation_id: UUID) -> None:
        with self._active_lock:
            self._active.discard(operation_id)
            self._active_lock.notify_all()  # a slot is free: the dispatcher claims the next queued operation

    def run(self, wakeup: Wakeup) -> None:
        """Dispatch until stopped."""
        self.follower.run(self.stop_event, wakeup)

    def stop(self, wait: bool = True) -> None:
        self.stop_event.set()
        with self._active_lock:
            self._active_lock.notify_all()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # Execution.

    def execute(self, operation_id: UUID) -> None:
        """Run a claimed operation to its end. Never raises; failures are recorded."""
        try:
            operation: Operation = self.app.repository.get(operation_id)
            instance: Instance = self.app.repository.get(operation.instance_id)
            handler = {
                OperationKind.CREATE: self._create,
                OperationKind.START: self._power,
                OperationKind.STOP: self._power,
                OperationKind.RESTART: self._power,
                OperationKind.BACKUP: self._backup,
                OperationKind.RESTORE: self._restore,
                OperationKind.DELETE: self._delete,
                OperationKind.DELETE_BACKUP: self._delete_backup,
                OperationKind.MOVE: self._move,
            }[operation.kind]
            with operation_context(operation.id, instance.id):
                if self._billing_blocked(operation):
                    return
                log.info("running %s operation", operation.kind.value)
                handler(operation, instance)
        except FencedError:
            log.warning("operation %s was changed by someone else; stopped acting on it", operation_id)
        except _Interrupted:
            log.info("operation %s left where it is: the worker is shutting down", operation_id)
        except Exception:
            log.exception("operation %s crashed", operation_id)
            try:
                operation = self.app.repository.get(operation_id)
                if operation.is_pending:
                    self._fail(operation, "internal", "the worker crashed; see its log")
            except Exception:
                log.exception("could not record the failure of %s", operation_id)

    def _billing_blocked(self, operation: Operation) -> bool:
        """The billing gates, again at execution: an operation queued before a suspension fails with its code."""
        blocked = operation_block(self.app, operation)
        if blocked is None:
            return False
        log.info("operation blocked by billing: %s", blocked.code)
        extra: list[Any] = []
        if operation.kind is OperationKind.BACKUP:
            backup: Backup = self.app.repository.get(backup_id_for_operation(operation.id))
            backup.fail(blocked.code, blocked.message)
            extra = [backup]
        self._fail(operation, blocked.code, blocked.message, *extra)
        return True

    def _create(self, operation: Operation, instance: Instance) -> None:
        if not self._place(operation, instance):
            return
        instance = self.app.repository.get(instance.id)
        results = self._steps(operation, instance, create_steps(instance.kind))
        if results is None:
            return
        port = int(results["allocate_port"]["port"])
        address = self.driver.address(self._spec(instance), port)
        operation.succeed({"port": port, "address": address})
        instance.provision(operation.id, port, address)
        self._save(operation, instance)

    def _place(self, operation: Operation, instance: Instance) -> bool:
        """Pick the instance's node and port (README "More than one host"); False if none has room (recorded)."""
        from services import nodes

        if not nodes.candidate_nodes(self.app, self.db):
            return True  # no nodes at all (a bare driver, as in unit tests): the driver's host is the one
        spec = self._spec(instance)
        need = nodes.need_of(spec.definition.resources if spec.definition is not None else None)
        self._record(operation, lambda op: op.start_step("place", {"memory_mb": need.memory_mb,
                                                                   "disk_mb": need.disk_mb}))
        try:
            placed = nodes.place(self.app, self.db, instance.id, operation.id, need)
        except DomainError as exc:
            self._fail(operation, exc.code, exc.message)
            return False
        self._record(operation, lambda op: op.finish_step("place", {"node": placed.node, "node_id": str(placed.node_id),
                                                                    "port": placed.port}))
        return True

    def _move(self, operation: Operation, instance: Instance) -> None:
        from services.workers.moving import run_move

        run_move(self, operation, instance)

    def _release_placement(self, instance_id: UUID) -> None:
        """Give back the room and the port a failed create or a deleted instance held on its node."""
        from services import nodes

        node_id = nodes.node_of(self.app, instance_id)
        if node_id is not None:
            nodes.release(self.app, instance_id, node_id)

    def _power(self, operation: Operation, instance: Instance) -> None:
        action = operation.kind.value
        if self._steps(operation, instance, POWER_STEPS[action]) is None:
            return
        operation.succeed({})
        if action == "stop":
            instance.mark_stopped(operation.id)
        else:
            instance.mark_started(operation.id)
        self._save(operation, instance)

    def _backup(self, operation: Operation, instance: Instance) -> None:
        backup: Backup = self.app.repository.get(backup_id_for_operation(operation.id))
        results = self._steps(operation, instance, ("create_backup",), backup_id=backup.id,
                              on_failure=lambda code, message: backup.fail(code, message), extra=[backup])
        if results is None:
            return
        manifest = dict(results["create_backup"]["manifest"])
        stored = None
        if self.offsite is not None and self.offsite.direct:
            stored = self._upload(operation, instance, backup, manifest)
            if stored is None:
                return
            manifest["path"] = self.offsite.describe(stored["key"])
        backup.complete(int(manifest["size"]), str(manifest["sha256"]), str(manifest["created_at"]),
                        str(manifest["path"]))
        if stored is not None:
            backup.store_offsite(stored["location"], stored["key"], int(stored["parts"]))
            manifest["location"] = stored["location"]
        self._save(backup)  # completed (and where it is) before anything older is pruned
        pruned = self._prune(operation, instance, backup)
        operation.succeed({"backup_id": str(backup.id), **manifest,
                           **({"pruned": [str(b) for b in pruned]} if pruned else {})})
        instance.complete_operation(operation.id, "backup")
        self._save(operation, instance)

    def _upload(self, operation: Operation, instance: Instance, backup: Backup,
                manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The node uploads its archive to offsite storage; None if that failed (recorded, upload aborted)."""
        assert self.offsite is not None
        key = backup_key(instance.id, backup.id)
        size, sha256 = int(manifest["size"]), str(manifest["sha256"])
        try:
            upload = self.offsite.begin_upload(key, size, sha256)
        except StorageError as exc:
            backup.fail(exc.code, exc.message)
            self._fail(operation, exc.code, exc.message, backup)
            return None
        self._record(operation, lambda op: op.start_step("upload_backup", {
            "location": self.offsite.location if self.offsite else "", "key": key, "upload_id": upload.upload_id,
            "parts": len(upload.parts), "part_size": upload.part_size}))
        try:
            etags = self.driver.upload_backup(backup.id, upload.parts, upload.part_size)
            parts = self.offsite.complete_upload(upload, etags, size)
        except (DriverError, StorageError) as exc:
            try:
                self.offsite.abort_upload(upload)
            except StorageError:
                log.warning("could not abort the multipart upload %s of %s", upload.upload_id, key)
            backup.fail(exc.code, exc.message)
            self._fail(operation, exc.code, exc.message, backup)
            return None
        result = {"location": self.offsite.location, "key": key, "parts": parts}
        self._record(operation, lambda op: op.finish_step("upload_backup", result))
        try:
            self.driver.delete_backup(backup.id)  # the node's copy: the offsite one is the backup now
        except DriverError as exc:
            log.warning("backup %s is offsite; its archive stays on the node: %s", backup.id, exc.message)
        return result

    def _prune(self, operation: Operation, instance: Instance, current: Backup) -> list[UUID]:
        """Delete the oldest automatic (scheduled) backups beyond the server's retention; return their ids.

        Level-triggered: decided afresh after every backup from the backups themselves (a backup the read model
        does not show yet is pruned next time). Each one is recorded (`Pruned`, its quota slot freed) right after
        its archive is removed, so a crash leaves no backup that claims an archive it no longer has.
        """
        keep = retention_of(self.app, instance.id, self.retention).effective
        if not keep:
            return []
        automatic = [current] if _automatic(operation) else []
        for row in self._backup_rows(instance.id):
            if row["id"] == str(current.id):
                continue
            backup = self.app.find(UUID(row["id"]), Backup)
            made_by = self.app.find(UUID(row["operation_id"]), Operation)
            if backup is not None and backup.status == "completed" and made_by is not None and _automatic(made_by):
                automatic.append(backup)
        doomed = sorted(automatic, key=lambda b: (b.created_on, str(b.id)), reverse=True)[keep:]
        if not doomed:
            return []
        reason = f"retention: the newest {keep} automatic backups are kept"
        self._record(operation, lambda op: op.start_step("prune_backups", {
            "keep": keep, "backups": [str(b.id) for b in doomed]}))
        pruned: list[UUID] = []
        kept: list[dict[str, str]] = []
        for backup in doomed:
            try:
                self._remove_archive(backup)
            except (DriverError, StorageError) as exc:
                log.warning("retention could not remove backup %s: %s", backup.id, exc.message)
                kept.append({"backup_id": str(backup.id), "code": exc.code})
                continue
            backup.prune(operation.id, reason)
            self._save(backup, *release(self.app, BACKUPS, str(instance.id), backup.id))
            pruned.append(backup.id)
        self._record(operation, lambda op: op.finish_step("prune_backups", {
            "pruned": [str(b) for b in pruned], **({"kept": kept} if kept else {})}))
        return pruned

    def _remove_archive(self, backup: Backup) -> None:
        """Remove a backup's archive wherever it is: offsite (the object) or on the node."""
        if backup.location != "local" and backup.key is not None:
            if self.offsite is None or self.offsite.location != backup.location:
                raise StorageError("offsite_failed", f"backup {backup.id} is in {backup.location} storage, "
                                                     "which is not configured (ZLH_BACKUP_S3_*)")
            self.offsite.delete(backup.key)
        else:
            self.driver.delete_backup(backup.id)

    def _backup_rows(self, instance_id: UUID) -> list[dict[str, Any]]:
        from projections import backups as backups_view

        return backups_view.list_for_instance(self.db, str(instance_id), include_deleted=False)

    def _restore(self, operation: Operation, instance: Instance) -> None:
        backup: Backup = self.app.repository.get(UUID(operation.params["backup_id"]))
        was_running = instance.status is InstanceStatus.RUNNING
        sha256 = str((backup.manifest or {})["sha256"])
        where = {"location": backup.location, "key": backup.key} if backup.location != "local" else {}
        if self._steps(operation, instance, restore_steps(was_running), backup_id=backup.id,
                       sha256=sha256, **where) is None:
            return
        operation.succeed({"backup_id": str(backup.id)})
        instance.complete_operation(operation.id, "restore")
        self._save(operation, instance)

    def _delete(self, operation: Operation, instance: Instance) -> None:
        spec = self._spec(instance)
        for finalizer in list(instance.finalizers):
            step = FINALIZER_STEPS[finalizer]
            if self._pause():
                raise _Interrupted
            self._record(operation, lambda op, s=step, f=finalizer: op.start_step(s, {"finalizer": f}))
            try:
                result, touched = self._remove(step, spec, instance, operation)
            except DriverError as exc:
                self._fail(operation, exc.code, exc.message)
                return
            operation.finish_step(step, result)
            instance.complete_finalizer(operation.id, finalizer)
            self._save(operation, instance, *touched)
        operation.succeed({})
        instance.mark_deleted(operation.id)
        claim: NameClaim = self.app.repository.get(NameClaim.create_id(instance.owner_id, instance.name))
        claim.release(instance.id)
        self._save(operation, instance, claim)
        free_slot(self.app, INSTANCES, str(instance.owner_id), instance.id)  # the owner may be creating meanwhile
        self._release_placement(instance.id)

    def _delete_backup(self, operation: Operation, instance: Instance) -> None:
        """The node agent removes the archive; then the backup is `deleted` and its quota slot free."""
        backup: Backup = self.app.repository.get(UUID(operation.params["backup_id"]))
        results = self._steps(operation, instance, ("delete_backup",), backup_id=backup.id, extra=[backup],
                              on_failure=lambda code, message: backup.deletion_failed(operation.id, code))
        if results is None:
            return
        operation.succeed({"backup_id": str(backup.id)})
        backup.delete(operation.id)
        instance.complete_operation(operation.id, "delete_backup")
        self._save(operation, instance, backup, *release(self.app, BACKUPS, str(instance.id), backup.id))

    def _remove(self, step: str, spec: InstanceSpec, instance: Instance,
                operation: Operation) -> tuple[dict[str, Any], list[Any]]:
        """Run one delete finalizer; return its result and any aggregates it changed."""
        if step == "delete_backups":
            deleted: list[Any] = []
            for backup_id in self.backup_ids(instance.id):
                backup: Backup = self.app.repository.get(backup_id)
                try:
                    self._remove_archive(backup)
                except StorageError as exc:
                    raise DriverError(exc.code, exc.message) from exc
                backup.delete(operation.id)
                deleted.append(backup)
            quota = release(self.app, BACKUPS, str(instance.id), *(b.id for b in deleted))
            return {"deleted": [str(b.id) for b in deleted]}, [*deleted, *quota]
        return self._run_step(step, spec, 0), []

    def backup_ids(self, instance_id: UUID) -> list[UUID]:
        from projections import backups as backups_view

        return [UUID(b["id"]) for b in backups_view.list_for_instance(self.db, str(instance_id))
                if b["status"] != "deleted"]

    # Steps.

    def _steps(self, operation: Operation, instance: Instance, steps: tuple[str, ...],
               on_failure: Any = None, extra: list[Any] | None = None,
               **context: Any) -> dict[str, dict[str, Any]] | None:
        """Run `steps` in order with intent and result events; None if one failed (recorded)."""
        spec = self._spec(instance)
        port = instance.port or 0
        results: dict[str, dict[str, Any]] = {}
        for step in steps:
            if self._pause():
                raise _Interrupted
            intent: dict[str, Any] = {"port": port} if port else {}
            intent |= {k: str(v) for k, v in context.items()}
            self._record(operation, lambda op, s=step, i=intent: op.start_step(s, i))
            try:
                result = self._run_step(step, spec, port, **context)
            except DriverError as exc:
                if on_failure is not None:
                    on_failure(exc.code, exc.message)
                self._fail(operation, exc.code, exc.message, *(extra or []))
                return None
            port = int(result.get("port", port))
            results[step] = result
            self._record(operation, lambda op, s=step, r=result: op.finish_step(s, r))
        return results

    def _pause(self) -> bool:
        """Honour the step delay; True if the worker is shutting down meanwhile."""
        return bool(self.step_delay) and self.stop_event.wait(self.step_delay)

    def _spec(self, instance: Instance) -> InstanceSpec:
        """The instance with its variables and its template's definition, as the driver needs them."""
        return self.templates.spec_of(instance)

    def _run_step(self, step: str, spec: InstanceSpec, port: int, **context: Any) -> dict[str, Any]:
        driver = self.driver
        if step == "allocate_port":
            return {"port": driver.allocate_port(spec)}
        if step == "create_directory":
            return {"path": driver.create_directory(spec)}
        if step == "install":
            return driver.install(spec)
        if step == "start_process":
            return {"pid": driver.start_process(spec, port)}
        if step == "wait_connectable":
            ready = spec.definition.ready.timeout if spec.definition is not None else 0.0
            driver.wait_connectable(spec, port, max(self.connect_timeout, ready))
            return {}
        if step == "publish_dns":
            return {"record": self.edge.publish_dns(spec, driver.public_host(spec), port)}
        if step == "publish_proxy":
            return {"target": self.edge.publish_proxy(spec, driver.public_host(spec), port)}
        if step == "stop_process":
            driver.stop_process(spec)
            return {}
        if step == "create_backup":
            return {"manifest": driver.create_backup(spec, context["backup_id"])}
        if step == "restore_backup":
            if context.get("location"):
                # The presigned URL is made here, just in time, and never recorded: it is a credential.
                if self.offsite is None or self.offsite.location != context["location"]:
                    raise DriverError("offsite_failed", f"the backup is in {context['location']} storage, which "
                                                        "is not configured (ZLH_BACKUP_S3_*)")
                try:
                    url = self.offsite.download_url(str(context["key"]))
                except StorageError as exc:
                    raise DriverError(exc.code, exc.message) from exc
                driver.restore_offsite_backup(spec, context["backup_id"], context["sha256"], url)
                return {"location": context["location"]}
            driver.restore_backup(spec, context["backup_id"], context["sha256"])
            return {}
        if step == "remove_proxy":
            self.edge.remove_proxy(spec)
            return {}
        if step == "remove_dns":
            self.edge.remove_dns(spec)
            return {}
        if step == "remove_directory":
            driver.remove_directory(spec)
            return {}
        if step == "delete_backup":
            backup: Backup = self.app.repository.get(context["backup_id"])
            try:
                self._remove_archive(backup)
            except StorageError as exc:
                raise DriverError(exc.code, exc.message) from exc
            return {"location": backup.location} if backup.location != "local" else {}
        raise DriverError("unknown_step", f"no such step: {step}")

    def _record(self, operation: Operation, command: Any) -> None:
        command(operation)
        self._save(operation)

    def _fail(self, operation: Operation, code: str, message: str, *extra: Any) -> None:
        instance: Instance = self.app.repository.get(operation.instance_id)
        operation.fail(code, message)
        try:
            instance.fail_operation(operation.id, operation.kind.value, code,
                                    process_stopped=operation.stopped_process)
        except DomainError:
            self._save(operation, *extra)
            return
        self._save(operation, instance, *extra)
        if operation.kind is OperationKind.CREATE:
            self._release_placement(instance.id)  # nothing half-made: the node's room and port are free again

    def _save(self, *aggregates: Any) -> None:
        try:
            self.app.save(*aggregates)
        except IntegrityError as exc:
            raise FencedError(str(exc)) from exc


def backup_key(instance_id: UUID, backup_id: UUID) -> str:
    """Where an offsite archive lives in the store: `backups/<instance_id>/<backup_id>.tar.gz`."""
    return f"backups/{instance_id}/{backup_id}.tar.gz"


def _automatic(operation: Operation) -> bool:
    """Whether a backup was made by a schedule, not asked for by a person: only those are pruned."""
    return str(operation.origin or "").startswith("schedule_run:")


class _Interrupted(Exception):
    """The worker is shutting down between steps: the operation stays where it is."""
