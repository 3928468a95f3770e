"""Use cases for announcements: staff (and billing) publish them; each user sees the current ones meant for them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.announcement import Announcement
from projections import announcements as view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError


def publish(app: ZLH, level: str, title: str, body: str, user_id: UUID | None = None,
            starts_at: datetime | None = None, ends_at: datetime | None = None,
            source: str = "staff") -> tuple[Announcement, int]:
    announcement = Announcement.publish(level=level, title=title, body=body, user_id=user_id, starts_at=starts_at,
                                        ends_at=ends_at, source=source)
    return announcement, app.save(announcement)[-1].notification.id


def withdraw(app: ZLH, announcement_id: UUID) -> int:
    announcement = app.find(announcement_id, Announcement)
    if announcement is None:
        raise NotFoundError("no such announcement")
    if announcement.withdrawn:
        return app.head()  # withdrawn before: nothing to write (DELETE is idempotent), nothing new to wait for
    announcement.withdraw()
    return app.save(announcement)[-1].notification.id


def current_for(db: ReadModelDB, user_id: UUID, now: datetime | None = None, limit: int = 10_000,
                after: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    return view.current_for(db, str(user_id), (now or datetime.now(UTC)), limit, after)
