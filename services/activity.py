"""Use cases that record what people do on a server outside operations: console commands and file writes.

Each is an event on the instance's `InstanceActivity` stream, with the actor. A console command is
recorded before it is sent (what reaches the server is always in the log); a file write after the
node wrote it (only what happened), with its path and size, never its contents.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.activity import InstanceActivity, activity_id
from services.infrastructure.store import ZLH


def _record(app: ZLH, instance_id: UUID, change: str, **data: object) -> int:
    """Append one activity event (optimistic concurrency: reload and retry); the log position."""
    for _ in range(20):
        activity = app.find(activity_id(instance_id), InstanceActivity) or InstanceActivity(instance_id=instance_id)
        getattr(activity, change)(**data)
        try:
            return app.save(activity)[-1].notification.id
        except IntegrityError:
            continue  # another command or write of this server was recorded at the same moment
    raise RuntimeError("the activity stream is too busy")


def record_console_command(app: ZLH, instance_id: UUID, actor_id: UUID, command: str) -> int:
    return _record(app, instance_id, "console_command", actor_id=actor_id, command=command)


def record_file_write(app: ZLH, instance_id: UUID, actor_id: UUID, path: str, size: int) -> int:
    return _record(app, instance_id, "file_written", actor_id=actor_id, path=path, size=size)


def record_directory_made(app: ZLH, instance_id: UUID, actor_id: UUID, path: str, via: str) -> int:
    return _record(app, instance_id, "directory_made", actor_id=actor_id, path=path, via=via)


def record_entry_removed(app: ZLH, instance_id: UUID, actor_id: UUID, path: str, directory: bool, via: str) -> int:
    return _record(app, instance_id, "entry_removed", actor_id=actor_id, path=path, directory=directory, via=via)


def record_entry_moved(app: ZLH, instance_id: UUID, actor_id: UUID, path: str, target: str, via: str) -> int:
    return _record(app, instance_id, "entry_moved", actor_id=actor_id, path=path, target=target, via=via)
