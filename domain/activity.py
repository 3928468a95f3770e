"""`InstanceActivity`: what people do on a server that is not an operation, with who did it.

One stream per instance (its id derives from the instance's), beside the instance's own stream so
that recording a console command never collides with an operation on the instance. It records
console commands as they are sent (the line, at most `MAX_COMMAND` characters, any character no
read model can hold replaced by U+FFFD) and file writes (the path and the size: never the contents),
and the other changes to files SFTP makes: a directory made, an entry removed, an entry moved
(`via` says through what: `sftp`).
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import derive
from domain.text import FORBIDDEN

MAX_COMMAND = 1000
MAX_PATH = 4096


def activity_id(instance_id: UUID) -> UUID:
    return derive("instance-activity", instance_id)


def storable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with every character no read model can hold replaced by U+FFFD."""
    return FORBIDDEN.sub("\ufffd", text[:limit])


class InstanceActivity(Aggregate):
    TOPIC = "zlh.InstanceActivity"

    class Event(Aggregate.Event):
        TOPIC = "zlh.InstanceActivity.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.InstanceActivity.Opened"
        instance_id: UUID

    class ConsoleCommandSent(Event):
        TOPIC = "zlh.InstanceActivity.ConsoleCommandSent"
        instance_id: UUID
        actor_id: UUID
        command: str

    class FileWritten(Event):
        TOPIC = "zlh.InstanceActivity.FileWritten"
        instance_id: UUID
        actor_id: UUID
        path: str
        size: int

    class DirectoryMade(Event):
        TOPIC = "zlh.InstanceActivity.DirectoryMade"
        instance_id: UUID
        actor_id: UUID
        path: str
        via: str

    class EntryRemoved(Event):
        TOPIC = "zlh.InstanceActivity.EntryRemoved"
        instance_id: UUID
        actor_id: UUID
        path: str
        directory: bool
        via: str

    class EntryMoved(Event):
        TOPIC = "zlh.InstanceActivity.EntryMoved"
        instance_id: UUID
        actor_id: UUID
        path: str
        target: str
        via: str

    @staticmethod
    def create_id(instance_id: UUID) -> UUID:
        return activity_id(instance_id)

    @event(Opened)
    def __init__(self, instance_id: UUID) -> None:
        self.instance_id = instance_id
        self.recorded = 0

    def console_command(self, actor_id: UUID, command: str) -> None:
        self._console_command_sent(instance_id=self.instance_id, actor_id=actor_id,
                                   command=storable(command, MAX_COMMAND))

    def file_written(self, actor_id: UUID, path: str, size: int) -> None:
        self._file_written(instance_id=self.instance_id, actor_id=actor_id, path=storable(path, MAX_PATH),
                           size=max(int(size), 0))

    @event(ConsoleCommandSent)
    def _console_command_sent(self, instance_id: UUID, actor_id: UUID, command: str) -> None:
        self.recorded += 1

    @event(FileWritten)
    def _file_written(self, instance_id: UUID, actor_id: UUID, path: str, size: int) -> None:
        self.recorded += 1

    def directory_made(self, actor_id: UUID, path: str, via: str) -> None:
        self._directory_made(instance_id=self.instance_id, actor_id=actor_id, path=storable(path, MAX_PATH), via=via)

    def entry_removed(self, actor_id: UUID, path: str, directory: bool, via: str) -> None:
        self._entry_removed(instance_id=self.instance_id, actor_id=actor_id, path=storable(path, MAX_PATH),
                            directory=bool(directory), via=via)

    def entry_moved(self, actor_id: UUID, path: str, target: str, via: str) -> None:
        self._entry_moved(instance_id=self.instance_id, actor_id=actor_id, path=storable(path, MAX_PATH),
                          target=storable(target, MAX_PATH), via=via)

    @event(DirectoryMade)
    def _directory_made(self, instance_id: UUID, actor_id: UUID, path: str, via: str) -> None:
        self.recorded += 1

    @event(EntryRemoved)
    def _entry_removed(self, instance_id: UUID, actor_id: UUID, path: str, directory: bool, via: str) -> None:
        self.recorded += 1

    @event(EntryMoved)
    def _entry_moved(self, instance_id: UUID, actor_id: UUID, path: str, target: str, via: str) -> None:
        self.recorded += 1
