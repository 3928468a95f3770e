"""Use cases for the notepad: read, and save with an expected version (optimistic concurrency, end to end)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.note import Note, VersionConflictError, check_size, note_id
from services.infrastructure.store import ZLH


def read_note(app: ZLH, user_id: UUID) -> tuple[str, int]:
    """`(content, version)`; a new user's note is empty at version 0."""
    note = app.find(note_id(user_id), Note)
    return (note.content, note.saves) if note is not None else ("", 0)


def save_note(app: ZLH, user_id: UUID, content: str, expected: int) -> tuple[str, int]:
    """Save if the note is still at `expected`; else `VersionConflictError` (nothing written)."""
    check_size(content)
    note = app.find(note_id(user_id), Note) or Note(user_id=user_id)
    note.save(content, expected)
    try:
        app.save(note)
    except IntegrityError:
        raise VersionConflictError("the note changed elsewhere at the same moment") from None
    return note.content, note.saves
