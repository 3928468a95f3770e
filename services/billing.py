"""Use cases for billing: verify and record Stripe webhooks, link customers, the gates, admin actions.

Recording a webhook is one atomic save of the `StripeEvent` (id derived from Stripe's
event id) and the fact it brings: the account's, or the unlinked customer's "kept" list.
A redelivery, even a concurrent one, collides on the `StripeEvent` id in the store and
changes nothing. No Stripe API is ever called.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import stripe
from eventsourcing.persistence import IntegrityError

from domain.billing import (
    DESTRUCTIVE_ACTIONS,
    BillingAccount,
    DestructiveActionRejectedError,
    EnforcementState,
    Schedule,
    StripeCustomer,
    StripeEvent,
    account_id,
    check_gate,
    fact_from_stripe,
    stripe_customer_id,
    stripe_event_id,
)
from domain.errors import DomainError
from domain.operation import Operation
from domain.text import TextValidationError, check_epoch_seconds, check_text
from services.infrastructure.store import ZLH
from services.users import load_user

TOLERANCE = 300  # seconds, both ways
_SECONDS = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() would take "²"

#: Which gate each operation kind passes when it is requested and again when it executes.
OPERATION_GATES = {"create": "create", "start": "start", "restart": "restart", "restore": "restore",
                   "backup": "backup"}


class BadSignatureError(DomainError):
    code = "bad_signature"


class BadPayloadError(DomainError):
    code = "bad_payload"


@dataclass(frozen=True)
class Received:
    duplicate: bool
    position: int


def verify_webhook(payload: bytes, signature: str | None, secret: str, now: float | None = None) -> dict[str, Any]:
    """Check the `Stripe-Signature` of the raw body (300 s either way) before parsing anything."""
    if not signature:
        raise BadSignatureError("the Stripe-Signature header is missing")
    try:
        stripe.Webhook.construct_event(payload, signature, secret, tolerance=TOLERANCE)
    except (stripe.SignatureVerificationError, ValueError, RecursionError) as exc:
        raise BadSignatureError(f"the Stripe-Signature does not verify: {type(exc).__name__}") from None
    stamps = [p.partition("=")[2].strip() for p in signature.split(",") if p.strip().startswith("t=")]
    if not stamps or not _SECONDS.fullmatch(stamps[0]) or int(stamps[0]) > (now or time.time()) + TOLERANCE:
        raise BadSignatureError("the Stripe-Signature timestamp is in the future")
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        raise BadPayloadError("the body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str) \
            or "created" not in event:
        raise BadPayloadError("not a Stripe event (id, type and created are required)")
    obj, customer = _object_and_customer(event)
    try:
        check_epoch_seconds("created", event["created"])
        for field, value in (("id", event["id"]), ("type", event["type"]), ("data.object.id", obj.get("id")),
                             ("data.object.customer", customer)):
            check_text(field, value if isinstance(value, str) else None)
    except TextValidationError as exc:
        raise BadPayloadError(f"not a storable Stripe event: {exc.message}") from None
    if not 1 <= len(event["id"]) <= 255 or not 1 <= len(event["type"]) <= 255:
        raise BadPayloadError("a Stripe event's id and type are 1-255 characters")
    return event


def _object_and_customer(event: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The event's `data.object` (a dict, else empty) and its customer id (as sent: expanded or not)."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    obj = obj if isinstance(obj, dict) else {}
    customer = obj.get("customer")
    return obj, customer.get("id") if isinstance(customer, dict) else customer


def load_account(app: ZLH, user_id: UUID) -> BillingAccount | None:
    return app.find(account_id(user_id), BillingAccount)


def load_or_open_account(app: ZLH, user_id: UUID) -> BillingAccount:
    account = load_account(app, user_id)
    if account is None:
        user = load_user(app, user_id)
        account = BillingAccount(user_id=user.id, email=user.email)
    return account


def record_stripe_event(app: ZLH, event: dict[str, Any], payload: bytes, schedule: Schedule) -> Received:
    """Record a verified Stripe event once, with its fact, in one atomic save."""
    obj, customer = _object_and_customer(event)
    customer = customer if isinstance(customer, str) and customer else None
    created = datetime.fromtimestamp(int(event["created"]), UTC)
    fact = fact_from_stripe(event["type"], obj)
    sha = hashlib.sha256(payload).hexdigest()
    for _ in range(20):
        received = StripeEvent(stripe_id=event["id"], type=event["type"], created=created,
                               livemode=bool(event.get("livemode", False)), customer_id=customer,
                               object_id=str(obj["id"]) if obj.get("id") else None, payload_sha256=sha, fact=fact)
        extra: list[Any] = []
        if fact is not None and customer is not None:
            link = app.find(stripe_customer_id(customer), StripeCustomer)
            if link is not None and link.user_id is not None:
                account = load_or_open_account(app, link.user_id)
                account.record_fact(event["id"], fact, created, schedule)
                extra = [account]
            else:
                link = link or StripeCustomer(customer_id=customer)
                link.keep(event["id"])
                extra = [link]
        try:
            recordings = app.save(received, *extra)
        except IntegrityError:
            if app.find(stripe_event_id(event["id"]), StripeEvent) is not None:
                return Received(True, app.head())
            continue  # the account or customer moved under us (another event): decide again
        return Received(False, recordings[-1].notification.id)
    raise RuntimeError("record_stripe_event: too much contention")


def link_customer(app: ZLH, user_id: UUID, customer_id: str, schedule: Schedule) -> int:
    """Link a Stripe customer to a user and apply the events kept for it; returns the log position."""
    load_user(app, user_id)
    for _ in range(20):
        link = app.find(stripe_customer_id(customer_id), StripeCustomer) or StripeCustomer(customer_id=customer_id)
        kept = link.link(user_id)
        account = load_or_open_account(app, user_id)
        account.link_customer(customer_id, schedule)
        for stripe_id in kept:
            received = app.find(stripe_event_id(stripe_id), StripeEvent)
            if received is not None and received.fact is not None:
                account.record_fact(stripe_id, received.fact, received.created, schedule)
        try:
            recordings = app.save(link, account)
        except IntegrityError:
            continue
        return recordings[-1].notification.id if recordings else app.head()
    raise RuntimeError("link_customer: too much contention")


def recorded_state(app: ZLH, owner_id: UUID) -> EnforcementState:
    account = load_account(app, owner_id)
    return EnforcementState.GOOD_STANDING if account is None else account.state


def check_billing_gate(app: ZLH, owner_id: UUID, action: str) -> None:
    """Raise 402 `billing_suspended` / `backups_blocked` if the owner's recorded state blocks `action`."""
    check_gate(recorded_state(app, owner_id), action)


def operation_block(app: ZLH, operation: Operation) -> DomainError | None:
    """The billing error that stops `operation` from executing now, if any (checked again at execution)."""
    action = OPERATION_GATES.get(operation.kind.value)
    if action is None:
        return None
    try:
        check_billing_gate(app, operation.owner_id, action)
    except DomainError as exc:
        return exc
    return None


def reject_destructive(app: ZLH, user_id: UUID, action: str, actor_id: UUID) -> int:
    """Record the attempt in the account's stream, then refuse: billing never deletes anything."""
    if action not in DESTRUCTIVE_ACTIONS:
        raise ValueError(action)
    for _ in range(20):
        account = load_or_open_account(app, user_id)
        account.reject_destructive(action, actor_id)
        try:
            position = app.save(account)[-1].notification.id
        except IntegrityError:
            continue
        raise DestructiveActionRejectedError(
            f"{action} is not something billing does: data, backups, DNS and instances are never deleted for "
            f"non-payment (recorded at position {position})")
    raise RuntimeError("reject_destructive: too much contention")


def enforce(app: ZLH, user_id: UUID, schedule: Schedule, now: datetime | None = None) -> list[EnforcementState]:
    """Record the transitions the facts call for now (what the worker does; also an admin re-evaluation)."""
    for _ in range(20):
        account = load_account(app, user_id)
        if account is None:
            return []
        entered = account.enforce(now or datetime.now(UTC), schedule)
        if not entered:
            return []
        try:
            app.save(account)
        except IntegrityError:
            continue
        return entered
    raise RuntimeError("enforce: too much contention")
