"""The notifications process manager: customer email and staff alerts, from the log, exactly once in effect.

It follows the log; for each event that warrants a message it creates a `Delivery`
per channel, whose id is derived from (event, channel): the dedupe key. Creating it
twice fails in the store, so replays and rebuilds never send again. Each attempt
appends `Attempting` (with optimistic concurrency, so two workers never send the
same delivery at once) before calling the channel, and the outcome after: a crash
between the two resends at most once. Transient failures are retried with capped
exponential backoff; permanent ones are recorded and raise a staff alert.

What to send for which event is `plan()`: it asks each function of `PLANNERS`;
a feature (support, billing, repairs) adds its messages by adding its planner there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification

from domain.delivery import Delivery
from domain.mail import reply_address
from domain.support import SupportTicket
from domain.user import User
from projections import deliveries as deliveries_view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import LogFollower, Wakeup
from services.infrastructure.store import ZLH
from services.notification_ports import AlertChannel, Email, EmailChannel, Outcome, StaffAlert, backoff
from services.workers.billing_messages import billing_messages
from services.workers.node_messages import node_messages
from services.workers.repair_messages import repair_messages
from services.workers.schedule_messages import schedule_messages

log = logging.getLogger(__name__)

POSITION = "notifications"
#: The streams whose events may owe a message (see `plan`).
PLANNED_TOPICS = ("zlh.SupportTicket.", "zlh.BillingAccount.", "zlh.StripeEvent.", "zlh.Repair.",
                  "zlh.Announcement.Published", "zlh.Node.", "zlh.Operation.Failed")
MAX_ATTEMPTS = 8
#: A delivery left `pending` or `attempting` this long is taken to be a crashed worker's: resend once.
STALE_AFTER = timedelta(seconds=60)

Planned = tuple[str, str, dict[str, Any]]  # (channel, kind, message)


def _attachment_lines(attachments: list[dict[str, Any]]) -> str:
    if not attachments:
        return ""
    names = "\n".join(f"- {a['name']} ({a['size']} bytes)" for a in attachments)
    return f"\n\nAttachments (download them from your tickets in the portal):\n{names}"


def support_messages(event: Any) -> list[Planned]:
    """Ticket acknowledgements to the customer, staff alerts for new tickets and customer replies, staff replies.

    Internal notes (`SupportTicket.NoteAdded`) warrant nothing: they never leave the staff desk.
    """
    if isinstance(event, SupportTicket.Opened):
        instance = str(event.instance_id) if event.instance_id else "none"
        return [
            ("email", "ticket_acknowledgement", {
                "to": event.email,
                "subject": f"[{event.number}] We received your request: {event.subject}",
                "body": (f"Hello,\n\nthanks for contacting ZLH support. Your ticket number is {event.number}.\n"
                         f"Reply to this email to add to your ticket.\n\n"
                         f"Subject: {event.subject}\n\n{event.message}{_attachment_lines(event.attachments)}"
                         "\n\n-- ZLH Support\n"),
                "ticket_number": event.number,
            }),
            ("discord", "ticket_alert", {
                "title": f"New support ticket {event.number}",
                "description": event.subject,
                "fields": [["Number", event.number], ["Customer", event.email], ["Instance", instance]],
                "level": "info",
            }),
        ]
    if isinstance(event, SupportTicket.Replied) and event.staff:
        return [("email", "ticket_reply", {"ticket_id": str(event.originator_id), "message": event.message,
                                           "attachments": event.attachments})]
    if isinstance(event, SupportTicket.Replied):
        return [("discord", "ticket_customer_reply", {
            "title": "Customer replied on a support ticket",
            "description": event.message[:300],
            "fields": [["Ticket", str(event.originator_id)], ["Via", event.via]],
            "level": "info",
        })]
    return []


#: One planner per feature; each is pure and returns [] for events it does not handle.
PLANNERS: tuple[Callable[[Any], list[Planned]], ...] = (support_messages, repair_messages, billing_messages,
                                                        schedule_messages, node_messages)


def plan(event: Any) -> list[Planned]:
    """The messages an event warrants. Pure: rendered once, recorded in the delivery."""
    return [message for planner in PLANNERS for message in planner(event)]


class NotificationsManager:
    def __init__(self, app: ZLH, db: ReadModelDB, email: EmailChannel, alerts: AlertChannel,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 support_domain: str = "zlh.localhost") -> None:
        self.app, self.db = app, db
        self.support_domain = support_domain
        self.channels: dict[str, Any] = {"email": email, "discord": alerts}
        self.now = now
        self.stop_event = threading.Event()
        self.follower = LogFollower(POSITION, app, db, self._dispatch, after_drain=self.retry_due)

    def position(self) -> int:
        return self.follower.position()

    # Following the log.

    def dispatch_page(self) -> int:
        return self.follower.process_page()

    def _dispatch(self, notification: Notification) -> None:
        if not notification.topic.startswith(PLANNED_TOPICS):
            return
        event = self.app.mapper.to_domain_event(notification)
        for channel, kind, message in plan(event):
            delivery_id = self.request(event.originator_id, event.originator_version, channel, kind, message)
            self.deliver(delivery_id)

    def request(self, source_id: UUID, source_version: int, channel: str, kind: str,
                message: dict[str, Any]) -> UUID:
        """Record that a message is owed (idempotent: the id is the dedupe key)."""
        delivery = Delivery(source_id=source_id, source_version=source_version, channel=channel, kind=kind,
                            message=self._render(kind, message))
        with contextlib.suppress(IntegrityError):  # already owed (a replay, another worker): it stands
            self.app.save(delivery)
        return delivery.id

    def _render(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        """Fill in what `plan` cannot know from the event alone (the ticket behind a staff reply, the address of
        the user a schedule notice is for)."""
        if kind == "schedule_notice":
            user = self.app.find(UUID(message["user_id"]), User)
            return {"to": user.email if user is not None else "", "subject": message["subject"],
                    "body": message["body"]}
        if kind == "ticket_acknowledgement" and "ticket_number" in message:
            rendered = {k: v for k, v in message.items() if k != "ticket_number"}
            return rendered | {"reply_to": reply_address(message["ticket_number"], self.support_domain)}
        if kind != "ticket_reply":
            return message
        ticket: SupportTicket = self.app.repository.get(UUID(message["ticket_id"]))
        return {"to": ticket.email, "subject": f"[{ticket.number}] New reply: {ticket.subject}",
                "reply_to": reply_address(ticket.number, self.support_domain),
                "body": f"Hello,\n\nZLH support replied to your ticket {ticket.number}:\n\n{message['message']}"
                        f"{_attachment_lines(message.get('attachments') or [])}\n\n"
                        "Reply to this email to answer.\n\n-- ZLH Support\n"}

    # Delivering.

    def deliver(self, delivery_id: UUID) -> str:
        """One attempt, if one is due; returns the delivery's status afterwards."""
        delivery = self.app.find(delivery_id, Delivery)
        if delivery is None:
            return "missing"
        now = self.now()
        if delivery.is_final or (delivery.status == "retrying" and delivery.retry_at and delivery.retry_at > now):
            return delivery.status
        delivery.attempt()
        try:
            self.app.save(delivery)
        except IntegrityError:
            return "claimed_elsewhere"
        outcome = self._send(delivery)
        self._record(delivery, outcome, now)
        try:
            self.app.save(delivery)
        except IntegrityError:
            log.warning("delivery %s changed while sending; outcome %s not recorded", delivery.id, outcome.status)
        if delivery.status == "failed" and delivery.channel != "discord":
            self._alert_failure(delivery, outcome)
        return delivery.status

    def _send(self, delivery: Delivery) -> Outcome:
        m, key = delivery.message, str(delivery.id)
        try:
            if delivery.channel == "email":
                return self.channels["email"].send(Email(to=m["to"], subject=m["subject"], body=m["body"],
                                                         reply_to=m.get("reply_to")), key)
            alert = StaffAlert(title=m["title"], description=m["description"],
                               fields=tuple((str(a), str(b)) for a, b in m.get("fields", [])),
                               level=m.get("level", "info"))
            return self.channels["discord"].send(alert, key)
        except Exception as exc:  # a channel must classify, but never let one bug stop the worker
            log.exception("channel %s raised", delivery.channel)
            return Outcome("transient", f"channel error: {type(exc).__name__}")

    @staticmethod
    def _record(delivery: Delivery, outcome: Outcome, now: datetime) -> None:
        if outcome.status == "sent":
            delivery.sent(outcome.detail)
        elif outcome.status == "not_configured":
            delivery.not_sent(outcome.detail)
        elif outcome.status == "permanent":
            delivery.fail(outcome.detail)
        elif delivery.attempts >= MAX_ATTEMPTS:
            delivery.fail(f"gave up after {delivery.attempts} attempts: {outcome.detail}")
        else:
            delay = backoff(delivery.attempts, retry_after=outcome.retry_after)
            delivery.retry_later(outcome.detail, now + timedelta(seconds=delay))

    def _alert_failure(self, delivery: Delivery, outcome: Outcome) -> None:
        alert_id = self.request(delivery.id, delivery.version, "discord", "delivery_failed", {
            "title": f"Could not deliver {delivery.kind} by {delivery.channel}",
            "description": outcome.detail[:500],
            "fields": [["Delivery", str(delivery.id)], ["Attempts", str(delivery.attempts)]],
            "level": "warning",
        })
        self.deliver(alert_id)

    def retry_due(self) -> int:
        """Attempt every delivery that is due again (or was left behind by a crash)."""
        now = self.now()
        ids = deliveries_view.due(self.db, now, now - STALE_AFTER)
        for delivery_id in ids:
            self.deliver(UUID(delivery_id))
        return len(ids)

    def run(self, wakeup: Wakeup) -> None:
        self.follower.run(self.stop_event, wakeup)
