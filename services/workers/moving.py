"""Moving a server to another node (an operation of kind `move`), run by the provisioning worker.

Steps, each bracketed by intent and result events on the operation: reserve room and a port on the target,
stop the server, back it up on the source, copy the archive to the target, restore it there (installing
the template first), start it there if it was running, republish DNS and the proxy, and only then record
the instance on the target and free the source. A failure at any step undoes what was made on the target,
gives back the reservation, and starts the server again on the source if it was running: the instance
stays whole where it was.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from domain.backup import Backup, backup_id_for_operation
from domain.errors import DomainError
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.node import Node
from domain.operation import Operation
from services import nodes
from services.ports import DriverError, InstanceDriver, InstanceSpec

log = logging.getLogger(__name__)


class MoveFailedError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def run_move(manager: Any, operation: Operation, instance: Instance) -> None:
    app, db, router = manager.app, manager.db, manager.driver
    target_id = UUID(operation.params["node"])
    source_id = getattr(instance, "node_id", None) or nodes.node_id_for_name(nodes.LOCAL_NODE)
    spec: InstanceSpec = manager._spec(instance)
    was_running = instance.status is InstanceStatus.RUNNING
    old_port = instance.port or 0
    backup_id = backup_id_for_operation(operation.id)
    source: InstanceDriver = router.node_driver(source_id)
    target: InstanceDriver | None = None
    made_on_target = False
    stopped = False

    def step(name: str, intent: dict[str, Any], action: Any) -> Any:
        manager._record(operation, lambda op: op.start_step(name, intent))
        try:
            result = action()
        except DriverError as exc:
            raise MoveFailedError(exc.code, exc.message) from exc
        manager._record(operation, lambda op: op.finish_step(name, result or {}))
        return result

    try:
        if target_id == source_id:
            raise MoveFailedError("same_node", "the server is on that node already")
        target_node = app.find(target_id, Node)
        if target_node is None or target_node.removed:
            raise MoveFailedError("not_found", "no such node")
        spec_need = nodes.need_of(spec.definition.resources if spec.definition is not None else None)
        try:
            placed = step("reserve", {"node": str(target_id)},
                          lambda: nodes.place(app, db, instance.id, operation.id, spec_need, only=target_id,
                                              record=False).__dict__ | {"node_id": str(target_id)})
        except DomainError as exc:
            raise MoveFailedError(exc.code, exc.message) from exc
        target = router.node_driver(target_id)
        if was_running:
            step("stop_process", {"node": str(source_id)}, lambda: source.stop_process(spec) or {})
            stopped = True
        manifest = step("create_backup", {"backup_id": str(backup_id)},
                        lambda: {"manifest": source.create_backup(spec, backup_id)})["manifest"]
        sha256 = str(manifest["sha256"])
        made_on_target = True
        step("transfer_backup", {"backup_id": str(backup_id), "size": manifest.get("size")},
             lambda: target.store_backup(backup_id, source.fetch_backup(backup_id), sha256) or {})
        step("create_directory", {}, lambda: {"path": target.create_directory(spec)})
        step("install", {}, lambda: target.install(spec))
        step("restore_backup", {"backup_id": str(backup_id)},
             lambda: target.restore_backup(spec, backup_id, sha256) or {})
        port = placed["port"]
        if port is None:
            port = step("allocate_port", {}, lambda: {"port": target.allocate_port(spec)})["port"]
        port = int(port)
        if was_running:
            step("start_process", {"port": port}, lambda: {"pid": target.start_process(spec, port)})
            ready = spec.definition.ready.timeout if spec.definition is not None else 0.0
            step("wait_connectable", {"port": port},
                 lambda: target.wait_connectable(spec, port, max(manager.connect_timeout, ready)) or {})
        host = target_node.public_host if target_node.agent_url != nodes.EMBEDDED else target.public_host(spec)
        address = spec_address_for(target, spec, host, port, target_node.agent_url == nodes.EMBEDDED)
        if instance.kind.value == "game":
            step("publish_dns", {"host": host, "port": port},
                 lambda: {"record": manager.edge.publish_dns(spec, host, port)})
            step("publish_proxy", {"host": host, "port": port},
                 lambda: {"target": manager.edge.publish_proxy(spec, host, port)})
    except MoveFailedError as exc:
        running = _undo(manager, instance, spec, source, target, target_id, made_on_target, stopped, old_port)
        fresh: Operation = app.repository.get(operation.id)
        current: Instance = app.repository.get(instance.id)
        fresh.fail(exc.code, exc.message)
        current.fail_operation(fresh.id, "move", exc.code, process_stopped=was_running and not running)
        manager._save(fresh, current)
        return
    operation = app.repository.get(operation.id)
    instance = app.repository.get(instance.id)
    operation.succeed({"node": str(target_id), "port": port, "address": address})
    instance.place(operation.id, target_id, port, address)
    instance.complete_operation(operation.id, "move")
    backup = _record_backup(app, instance, operation, manifest)
    manager._save(operation, instance, *backup)
    _free_source(manager, spec, source, source_id, instance.id, backup_id)


def spec_address_for(target: InstanceDriver, spec: InstanceSpec, host: str, port: int, embedded: bool) -> str:
    from services.ports import spec_address

    return target.address(spec, port) if embedded else spec_address(spec, host, port)


def _record_backup(app: Any, instance: Instance, operation: Operation, manifest: dict[str, Any]) -> list[Any]:
    """The move's archive, kept as a backup of the server (it is on both nodes)."""
    backup = Backup(instance_id=instance.id, owner_id=instance.owner_id, operation_id=operation.id)
    backup.complete(int(manifest["size"]), str(manifest["sha256"]), str(manifest["created_at"]),
                    str(manifest["path"]))
    return [backup]


def _free_source(manager: Any, spec: InstanceSpec, source: InstanceDriver, source_id: UUID, instance_id: UUID,
                 backup_id: UUID) -> None:
    """The server is on the target: its files and room on the source go (best effort: a leftover directory
    on the source is reported by the controller, never a reason to undo the move)."""
    try:
        source.stop_process(spec)
        source.remove_directory(spec)
    except DriverError as exc:
        log.warning("move: could not clean up the source node: %s %s", exc.code, exc.message)
    nodes.release(manager.app, instance_id, source_id)


def _undo(manager: Any, instance: Instance, spec: InstanceSpec, source: InstanceDriver,
          target: InstanceDriver | None, target_id: UUID, made_on_target: bool, stopped: bool, old_port: int) -> bool:
    """Leave the server whole on the source: remove what the target got, start the source again if the move
    stopped it. Returns whether the server runs on the source (False if it was stopped or will not start)."""
    if target is not None and made_on_target:
        try:
            target.stop_process(spec)
            target.remove_directory(spec)
        except DriverError as exc:
            log.warning("move: could not clean up the target node: %s %s", exc.code, exc.message)
    if target_id != getattr(instance, "node_id", None):
        nodes.release(manager.app, instance.id, target_id)
    if not stopped:
        return instance.status is InstanceStatus.RUNNING
    try:
        source.start_process(spec, old_port)
    except DriverError as exc:
        log.warning("move: could not start the server again on its source node: %s", exc.code)
        return False
    return True
