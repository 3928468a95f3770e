"""Billing: the Stripe webhook, the customer's billing state, and the staff routes around it."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.consistency import read_your_writes
from api.deps import AdminDep, ContainerDep, UserDep
from api.limits import MAX_WEBHOOK_BYTES
from api.openapi import STRIPE_SIGNATURE
from api.problems import Problem
from api.schemas import Stream, StreamEvent
from domain.billing import DESTRUCTIVE_ACTIONS, account_id
from projections import billing as billing_view
from services import billing
from services.audit import stream_events

router = APIRouter(tags=["billing"])


class WebhookReceived(BaseModel):
    received: bool
    duplicate: bool


class BillingOut(BaseModel):
    state: Literal["good_standing", "warned", "final_warning", "suspended"]
    since: str | None
    next_step_at: str | None
    customer_id: str | None = None
    subscription_status: str | None = None


class LinkCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")


class AdminAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=64)


@router.post("/api/billing/stripe/webhook", response_model=WebhookReceived)
async def stripe_webhook(request: Request, response: Response, container: ContainerDep,
                         stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature",
                                                                        json_schema_extra=STRIPE_SIGNATURE)] = None
                         ) -> WebhookReceived:
    """Verify the raw body's signature first; record the event and its fact once (redeliveries: duplicate)."""
    secret = container.settings.stripe_webhook_secret
    if not secret:
        raise Problem(503, "webhook_not_configured", "ZLH_STRIPE_WEBHOOK_SECRET is not set; refusing webhooks")
    payload = await request.body()
    if len(payload) > MAX_WEBHOOK_BYTES:  # api/limits.py stops it sooner; this is a second guard
        raise Problem(413, "too_large", "webhook bodies are limited to 1 MiB")
    try:
        event = billing.verify_webhook(payload, stripe_signature, secret)
    except billing.BadSignatureError as exc:
        raise Problem(400, "bad_signature", exc.message) from None
    except billing.BadPayloadError as exc:
        raise Problem(400, "bad_payload", exc.message) from None
    received = await run_in_threadpool(billing.record_stripe_event, container.app, event, payload,
                                       container.schedule)
    await read_your_writes(container, response, received.position, "billing")
    return WebhookReceived(received=True, duplicate=received.duplicate)


@router.get("/api/billing", response_model=BillingOut)
def my_billing(user: UserDep, container: ContainerDep) -> BillingOut:
    """The caller's recorded enforcement state, since when, and when the next step is due (if unpaid)."""
    row = billing_view.get_for_user(container.db, str(user.id))
    if row is None:
        return BillingOut(state="good_standing", since=None, next_step_at=None)
    return BillingOut(state=row["state"], since=row["since"], next_step_at=row["next_step_at"],
                      customer_id=row["customer_id"], subscription_status=row["subscription_status"])


@router.put("/api/admin/users/{user_id}/stripe", response_model=BillingOut)
async def link_stripe_customer(user_id: UUID, body: LinkCustomer, response: Response, _: AdminDep,
                               container: ContainerDep) -> BillingOut:
    """Link the user's Stripe customer; events kept for that customer are applied now."""
    position = await run_in_threadpool(billing.link_customer, container.app, user_id, body.customer_id,
                                       container.schedule)
    await read_your_writes(container, response, position, "billing", "users")
    row = billing_view.get_for_user(container.db, str(user_id)) or {}
    return BillingOut(state=row.get("state", "good_standing"), since=row.get("since"),
                      next_step_at=row.get("next_step_at"), customer_id=row.get("customer_id"),
                      subscription_status=row.get("subscription_status"))


@router.post("/api/admin/billing/{user_id}/actions")
async def admin_action(user_id: UUID, body: AdminAction, admin: AdminDep, container: ContainerDep) -> dict:
    """`reevaluate` re-assesses the account now; every destructive action is refused (403) and recorded."""
    if body.action in DESTRUCTIVE_ACTIONS:
        await run_in_threadpool(billing.reject_destructive, container.app, user_id, body.action, admin.id)
    if body.action != "reevaluate":
        raise Problem(422, "unknown_action", "actions: reevaluate (destructive actions are always refused)")
    await run_in_threadpool(billing.load_user, container.app, user_id)
    entered = await run_in_threadpool(billing.enforce, container.app, user_id, container.schedule)
    return {"action": "reevaluate", "entered": [s.value for s in entered]}


@router.get("/api/admin/billing/{user_id}/events", response_model=Stream)
def account_events(user_id: UUID, _: AdminDep, container: ContainerDep) -> Stream:
    """The billing account's stream (facts, transitions, rejected actions), oldest first."""
    aid = account_id(user_id)
    events = stream_events(container.app, aid)
    if not events:
        raise Problem(404, "not_found", "this user has no billing account yet")
    return Stream(id=str(aid), events=[StreamEvent(**e) for e in events])
