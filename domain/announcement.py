"""Announcements: global or for one user, with a level and an optional time window."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.text import check_text, check_timestamp

LEVELS = ("info", "warning", "critical")


class InvalidWindowError(DomainError):
    code = "invalid_window"


class Announcement(Aggregate):
    TOPIC = "zlh.Announcement"

    class Event(Aggregate.Event):
        TOPIC = "zlh.Announcement.Event"

    class Published(Event, Aggregate.Created):
        TOPIC = "zlh.Announcement.Published"
        level: str
        title: str
        body: str
        user_id: UUID | None
        starts_at: datetime | None
        ends_at: datetime | None
        source: str

    class Withdrawn(Event):
        TOPIC = "zlh.Announcement.Withdrawn"

    @staticmethod
    def check_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
        check_timestamp("starts_at", starts_at)
        check_timestamp("ends_at", ends_at)
        if starts_at is not None and ends_at is not None and ends_at <= starts_at:
            raise InvalidWindowError("ends_at must be after starts_at")

    @classmethod
    def publish(cls, level: str, title: str, body: str, user_id: UUID | None, starts_at: datetime | None,
                ends_at: datetime | None, source: str, announcement_id: UUID | None = None) -> Announcement:
        """A new announcement, once its texts are storable and its window is valid.

        `announcement_id` makes publishing idempotent (a process manager derives it from the event that
        calls for the announcement, so a replay collides in the store instead of announcing twice).
        """
        check_text("title", title)
        check_text("body", body)
        cls.check_window(starts_at, ends_at)
        fields = {"level": level, "title": title, "body": body, "user_id": user_id, "starts_at": starts_at,
                  "ends_at": ends_at, "source": source}
        if announcement_id is not None:
            return cls._create(cls.Published, id=announcement_id, **fields)
        return cls(**fields)

    @event(Published)
    def __init__(self, level: str, title: str, body: str, user_id: UUID | None, starts_at: datetime | None,
                 ends_at: datetime | None, source: str) -> None:
        self.level, self.title, self.body = level, title, body
        self.user_id, self.starts_at, self.ends_at = user_id, starts_at, ends_at
        self.source = source  # "staff", or the process that published it (e.g. "billing")
        self.withdrawn = False

    def withdraw(self) -> None:
        if not self.withdrawn:
            self._withdrawn()

    @event(Withdrawn)
    def _withdrawn(self) -> None:
        self.withdrawn = True
