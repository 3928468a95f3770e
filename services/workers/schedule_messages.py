"""What the notifications worker sends when a schedule fails: the announcement, by email, to its owner.

The schedules worker publishes at most one announcement per schedule and UTC day for runs that end
`failed` or `missed` (source `schedule`, addressed to the owner); this planner turns each into one
email. The address is filled in when the delivery is requested (`NotificationsManager._render`).
"""

from __future__ import annotations

from typing import Any

from domain.announcement import Announcement

Planned = tuple[str, str, dict[str, Any]]


def schedule_messages(event: Any) -> list[Planned]:
    if not isinstance(event, Announcement.Published) or event.source != "schedule" or event.user_id is None:
        return []
    return [("email", "schedule_notice", {
        "user_id": str(event.user_id),
        "subject": f"[ZLH] {event.title}",
        "body": f"Hello,\n\n{event.body}\n\nYou can see every run and change the schedule in the portal, on the "
                "server's Schedules tab.\n\n-- ZLH\n",
    })]
