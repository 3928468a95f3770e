"""The per-user notepad: each save is an event; the version guards against lost updates.

`version` counts saves (0 for a new user). A save must name the version it edits
(`If-Match`); a stale one is a `VersionConflictError`, so a second browser tab
never silently overwrites the first.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive
from domain.text import check_text

MAX_NOTE_BYTES = 64 * 1024


class VersionConflictError(DomainError):
    code = "version_conflict"


class NoteTooLargeError(DomainError):
    code = "too_large"


def note_id(user_id: UUID) -> UUID:
    return derive("note", user_id)


def check_size(content: str) -> None:
    if len(content.encode()) > MAX_NOTE_BYTES:
        raise NoteTooLargeError(f"notes are limited to {MAX_NOTE_BYTES // 1024} KiB")


class Note(Aggregate):
    TOPIC = "zlh.Note"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Note.Event"

    class Started(Event, Aggregate.Created):
        TOPIC = "zlh.Note.Started"
        user_id: UUID

    class Saved(Event):
        TOPIC = "zlh.Note.Saved"
        content: str
        saves: int

    @staticmethod
    def create_id(user_id: UUID) -> UUID:
        return note_id(user_id)

    @event(Started)
    def __init__(self, user_id: UUID) -> None:
        self.user_id = user_id
        self.content = ""
        self.saves = 0

    def save(self, content: str, expected: int) -> None:
        check_text("content", content)
        check_size(content)
        if expected != self.saves:
            raise VersionConflictError(f"the note is at version {self.saves}, not {expected}: it changed elsewhere")
        self._saved(content=content, saves=self.saves + 1)

    @event(Saved)
    def _saved(self, content: str, saves: int) -> None:
        self.content = content
        self.saves = saves
