"""Billing enforcement: Stripe facts, the order-free enforcement schedule, and the billing aggregates.

Stripe neither orders nor deduplicates webhook deliveries, so an account keeps *facts* per
invoice and merges them with a join (commutative, associative, idempotent): paid or void
beats open, and an invoice's failure time is the earliest Stripe `created` of its failures.
The enforcement state is then a pure function of the facts and the current time
(`assess`). The `BillingAccount` records the transitions it went through, one step at a
time (`Warned`, `FinalWarningIssued`, `Suspended`, `Restored`), and each transition names
its effects from a closed allow-list (`Effect`): nothing here, or in any billing code,
can express deleting data, backups, DNS or proxy records, or instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive

# States, severity and the schedule.


class EnforcementState(StrEnum):
    GOOD_STANDING = "good_standing"
    WARNED = "warned"
    FINAL_WARNING = "final_warning"
    SUSPENDED = "suspended"


#: Escalation order: a step is never skipped on the way up.
LADDER: tuple[EnforcementState, ...] = tuple(EnforcementState)


def severity(state: str) -> int:
    return LADDER.index(EnforcementState(state))


@dataclass(frozen=True)
class Schedule:
    """Time from the first unpaid failure to the final warning, and to suspension."""

    final_warning_after: timedelta
    suspend_after: timedelta

    @classmethod
    def of(cls, final_warning_after: float | timedelta, suspend_after: float | timedelta) -> Schedule:
        def td(v: float | timedelta) -> timedelta:
            return v if isinstance(v, timedelta) else timedelta(seconds=v)

        return cls(td(final_warning_after), td(suspend_after))

    def entered_at(self, state: EnforcementState, anchor: datetime) -> datetime:
        """When `state` is due for an account whose first unpaid failure is `anchor`."""
        return {EnforcementState.WARNED: anchor, EnforcementState.FINAL_WARNING: anchor + self.final_warning_after,
                EnforcementState.SUSPENDED: anchor + self.suspend_after}[state]

    def next_step_at(self, state: str, anchor: datetime | None) -> datetime | None:
        """The time of the next escalation after the recorded `state`, or None (none scheduled)."""
        if anchor is None or state in (EnforcementState.GOOD_STANDING, EnforcementState.SUSPENDED):
            return None
        return self.entered_at(LADDER[severity(state) + 1], anchor)


# Facts and their merge.

#: Invoice status rank: the merge keeps the highest. Paid and void both settle an invoice.
RANK = {"open": 0, "uncollectible": 1, "paid": 2, "void": 2}
SETTLED = 2


@dataclass(frozen=True)
class InvoiceFact:
    invoice_id: str
    status: str  # open | uncollectible | paid | void
    failed_at: datetime | None = None  # the Stripe `created` of a payment failure
    settled_at: datetime | None = None  # the Stripe `created` of a paid/void event

    def merge(self, other: InvoiceFact) -> InvoiceFact:
        """The join of two facts about one invoice: independent of order and of repetition."""
        status = max(self.status, other.status, key=lambda s: (RANK[s], s))
        return InvoiceFact(self.invoice_id, status, _min(self.failed_at, other.failed_at),
                           _min(self.settled_at, other.settled_at))

    @property
    def unpaid_failure(self) -> bool:
        return self.failed_at is not None and RANK[self.status] < SETTLED


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def fold(facts: Iterable[InvoiceFact], into: Mapping[str, InvoiceFact] | None = None) -> dict[str, InvoiceFact]:
    """Merge facts per invoice."""
    invoices = dict(into or {})
    for fact in facts:
        known = invoices.get(fact.invoice_id)
        invoices[fact.invoice_id] = fact if known is None else known.merge(fact)
    return invoices


def anchor_of(invoices: Mapping[str, InvoiceFact]) -> datetime | None:
    """The earliest failure among invoices still unpaid: what every timer counts from."""
    failures = [f.failed_at for f in invoices.values() if f.unpaid_failure and f.failed_at is not None]
    return min(failures) if failures else None


class Assessment(NamedTuple):
    state: EnforcementState
    since: datetime | None
    next_step_at: datetime | None


def assess(invoices: Mapping[str, InvoiceFact] | Iterable[InvoiceFact], now: datetime,
           final_warning_after: float | timedelta, suspend_after: float | timedelta) -> Assessment:
    """The enforcement state the facts call for at `now`: pure, order-free, monotone in `now`."""
    schedule = Schedule.of(final_warning_after, suspend_after)
    merged = invoices if isinstance(invoices, Mapping) else fold(invoices)
    anchor = anchor_of(merged)
    if anchor is None:
        settled = [f.settled_at for f in merged.values() if f.failed_at is not None and f.settled_at is not None]
        return Assessment(EnforcementState.GOOD_STANDING, max(settled) if settled else None, None)
    state = EnforcementState.WARNED
    for candidate in (EnforcementState.FINAL_WARNING, EnforcementState.SUSPENDED):
        if now >= schedule.entered_at(candidate, anchor):
            state = max(state, candidate, key=severity)
    since = schedule.entered_at(state, anchor)
    pending = [t for t in (schedule.entered_at(s, anchor) for s in LADDER[severity(state) + 1:]) if t > now]
    return Assessment(state, since, min(pending) if pending else None)


def steps_between(current: str, target: str) -> list[EnforcementState]:
    """The transitions to record: every step on the way up, straight down on the way back."""
    lo, hi = severity(current), severity(target)
    if hi > lo:
        return list(LADDER[lo + 1: hi + 1])
    return [EnforcementState(target)] if hi < lo else []


# Stripe events to facts.

INVOICE_STATUS = {
    "invoice.payment_failed": "open",
    "invoice.paid": "paid",
    "invoice.payment_succeeded": "paid",
    "invoice.voided": "void",
    "invoice.marked_uncollectible": "uncollectible",
}
TERMINAL_SUBSCRIPTION = frozenset({"canceled", "incomplete_expired"})


def fact_from_stripe(event_type: str, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The billing fact a Stripe event carries (JSON-ready), or None when it changes nothing here."""
    if event_type in INVOICE_STATUS and obj.get("id"):
        return {"kind": "invoice", "invoice_id": str(obj["id"]), "status": INVOICE_STATUS[event_type],
                "failed": event_type == "invoice.payment_failed"}
    if event_type.startswith("customer.subscription.") and obj.get("status") in TERMINAL_SUBSCRIPTION:
        return {"kind": "subscription", "subscription_id": str(obj.get("id", "")), "status": str(obj["status"])}
    return None


# Effects: the closed allow-list.


class Effect(StrEnum):
    """Everything billing may cause. There is deliberately no member that removes anything."""

    NOTIFY = "notify"  # email + announcement to the customer
    BLOCK_BACKUPS = "block_backups"  # the backup gate reads the recorded state
    STOP_INSTANCES = "stop_instances"  # stop running instances (never delete), mark them suspended
    LIFT_GATES = "lift_gates"  # remove the `billing` suspension reason
    START_INSTANCES = "start_instances"  # start again only the instances billing itself stopped


EFFECTS: dict[EnforcementState, tuple[Effect, ...]] = {
    EnforcementState.WARNED: (Effect.NOTIFY,),
    EnforcementState.FINAL_WARNING: (Effect.NOTIFY, Effect.BLOCK_BACKUPS),
    EnforcementState.SUSPENDED: (Effect.NOTIFY, Effect.STOP_INSTANCES),
    EnforcementState.GOOD_STANDING: (Effect.NOTIFY, Effect.LIFT_GATES, Effect.START_INSTANCES),
}


def effects_for(entered: EnforcementState, previous: EnforcementState) -> tuple[Effect, ...]:
    """The effects of entering `entered` from `previous`."""
    if severity(entered) < severity(previous):
        lift = (Effect.LIFT_GATES, Effect.START_INSTANCES) if previous is EnforcementState.SUSPENDED else ()
        return (Effect.NOTIFY, *lift)
    return EFFECTS[entered]


# Gates.

DESTRUCTIVE_ACTIONS = frozenset({"delete_data", "delete_backups", "delete_dns", "delete_instances"})
SUSPENDED_BLOCKS = frozenset({"create", "start", "restart", "restore", "write_files"})


class BillingSuspendedError(DomainError):
    code = "billing_suspended"


class BackupsBlockedError(DomainError):
    code = "backups_blocked"


class DestructiveActionRejectedError(DomainError):
    code = "destructive_action_rejected"


class CustomerLinkedElsewhereError(DomainError):
    code = "customer_linked_elsewhere"


def check_gate(state: str, action: str) -> None:
    """Raise the 402 error for `action` under the recorded enforcement `state`, if any."""
    if action == "backup" and severity(state) >= severity(EnforcementState.FINAL_WARNING):
        raise BackupsBlockedError("backups are paused until the overdue invoice is paid; existing backups are kept")
    if action in SUSPENDED_BLOCKS and state == EnforcementState.SUSPENDED:
        raise BillingSuspendedError(f"the account is suspended for non-payment: {action} is blocked until it is paid")


# Ids.


def account_id(user_id: UUID) -> UUID:
    """The billing account of a user."""
    return derive("billing-account", user_id)


def stripe_event_id(stripe_id: str) -> UUID:
    return derive("stripe-event", stripe_id)


def stripe_customer_id(customer_id: str) -> UUID:
    return derive("stripe-customer", customer_id)


def billing_operation_key(transition_id: UUID, transition_version: int, instance_id: UUID) -> str:
    """The request key of a stop/start billing queues for one transition: a replay finds the same operation."""
    return f"billing:{transition_id}:{transition_version}:{instance_id}"


# Aggregates.


class BillingAccount(Aggregate):
    TOPIC = "zlh.BillingAccount"

    class Event(Aggregate.Event):
        TOPIC = "zlh.BillingAccount.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.BillingAccount.Opened"
        user_id: UUID
        email: str

    class CustomerLinked(Event):
        TOPIC = "zlh.BillingAccount.CustomerLinked"
        customer_id: str
        next_step_at: datetime | None

    class InvoiceFactRecorded(Event):
        """`anchor` and `next_step_at` are what the facts now say (derived, carried for the read side);
        `merged_*` is what the account now knows of the invoice, this fact merged with the earlier ones (None
        in events recorded before it was carried: replaying those merges them again)."""

        TOPIC = "zlh.BillingAccount.InvoiceFactRecorded"
        stripe_event_id: str
        invoice_id: str
        status: str
        occurred_at: datetime
        failed: bool
        anchor: datetime | None
        next_step_at: datetime | None
        merged_status: str | None = None
        merged_failed_at: datetime | None = None
        merged_settled_at: datetime | None = None

    class SubscriptionStatusRecorded(Event):
        TOPIC = "zlh.BillingAccount.SubscriptionStatusRecorded"
        stripe_event_id: str
        subscription_id: str
        status: str
        occurred_at: datetime

    class Transitioned(Event):
        """Base of the recorded steps: the state entered, when it was due, and the next step."""

        TOPIC = "zlh.BillingAccount.Transitioned"
        state: str
        previous: str
        since: datetime | None
        next_step_at: datetime | None
        email: str

        def apply(self, aggregate: Any) -> None:
            aggregate.state = EnforcementState(self.state)
            aggregate.since = self.since
            aggregate.state_version = self.originator_version

    class Warned(Transitioned):
        TOPIC = "zlh.BillingAccount.Warned"

    class FinalWarningIssued(Transitioned):
        TOPIC = "zlh.BillingAccount.FinalWarningIssued"

    class Suspended(Transitioned):
        TOPIC = "zlh.BillingAccount.Suspended"

    class Restored(Transitioned):
        """Payment (or a void) moved the account to a less severe state; `state` says which."""

        TOPIC = "zlh.BillingAccount.Restored"

    class DestructiveActionRejected(Event):
        TOPIC = "zlh.BillingAccount.DestructiveActionRejected"
        action: str
        actor_id: UUID

    @staticmethod
    def create_id(user_id: UUID) -> UUID:
        return account_id(user_id)

    @event(Opened)
    def __init__(self, user_id: UUID, email: str) -> None:
        self.user_id = user_id
        self.email = email
        self.customer_id: str | None = None
        self.invoices: dict[str, InvoiceFact] = {}
        self.seen: set[str] = set()
        self.subscriptions: dict[str, str] = {}
        self.state = EnforcementState.GOOD_STANDING
        self.since: datetime | None = None
        #: The version of the transition that entered the current state: effects are keyed by it.
        self.state_version: int | None = None
        self.rejected_actions: list[str] = []

    @property
    def anchor(self) -> datetime | None:
        return anchor_of(self.invoices)

    # Commands.

    def link_customer(self, customer_id: str, schedule: Schedule) -> None:
        if customer_id != self.customer_id:
            self._customer_linked(customer_id=customer_id,
                                  next_step_at=schedule.next_step_at(self.state, self.anchor))

    def record_fact(self, stripe_id: str, fact: Mapping[str, Any], occurred_at: datetime,
                    schedule: Schedule) -> bool:
        """Record a fact from Stripe event `stripe_id` (once); False if this event was already applied."""
        if stripe_id in self.seen:
            return False
        if fact["kind"] == "invoice":
            failed = bool(fact["failed"])
            merged = fold([_invoice_fact(fact["invoice_id"], fact["status"], failed, occurred_at)], self.invoices)
            anchor, invoice = anchor_of(merged), merged[fact["invoice_id"]]
            self._invoice_fact_recorded(stripe_event_id=stripe_id, invoice_id=fact["invoice_id"],
                                        status=fact["status"], occurred_at=occurred_at, failed=failed, anchor=anchor,
                                        next_step_at=schedule.next_step_at(self.state, anchor),
                                        merged_status=invoice.status, merged_failed_at=invoice.failed_at,
                                        merged_settled_at=invoice.settled_at)
        elif fact["kind"] == "subscription":
            self._subscription_status_recorded(stripe_event_id=stripe_id, subscription_id=fact["subscription_id"],
                                               status=fact["status"], occurred_at=occurred_at)
        else:
            raise ValueError(f"unknown fact kind {fact['kind']!r}")
        return True

    def enforce(self, now: datetime, schedule: Schedule) -> list[EnforcementState]:
        """Record every transition the facts call for at `now`, in order; return the states entered."""
        target = assess(self.invoices, now, schedule.final_warning_after, schedule.suspend_after)
        anchor = self.anchor
        entered = steps_between(self.state, target.state)
        for state in entered:
            previous = self.state
            if severity(state) > severity(previous) and anchor is not None:
                since: datetime | None = schedule.entered_at(state, anchor)
            else:
                since = target.since or now
            cls = ESCALATIONS[state] if severity(state) > severity(previous) else BillingAccount.Restored
            self.trigger_event(cls, state=state.value, previous=previous.value, since=since,
                               next_step_at=schedule.next_step_at(state, anchor), email=self.email)
        return entered

    def reject_destructive(self, action: str, actor_id: UUID) -> None:
        if action not in DESTRUCTIVE_ACTIONS:
            raise ValueError(f"{action!r} is not a destructive action")
        self._destructive_action_rejected(action=action, actor_id=actor_id)

    # Events: assign state only.

    @event(CustomerLinked)
    def _customer_linked(self, customer_id: str, next_step_at: datetime | None) -> None:
        self.customer_id = customer_id

    @event(InvoiceFactRecorded)
    def _invoice_fact_recorded(self, stripe_event_id: str, invoice_id: str, status: str, occurred_at: datetime,
                               failed: bool, anchor: datetime | None, next_step_at: datetime | None,
                               merged_status: str | None = None, merged_failed_at: datetime | None = None,
                               merged_settled_at: datetime | None = None) -> None:
        self.seen.add(stripe_event_id)
        if merged_status is None:  # recorded before the merged fact was carried: merge it as it was then
            self.invoices = fold([_invoice_fact(invoice_id, status, failed, occurred_at)], self.invoices)
        else:
            self.invoices = {**self.invoices,
                             invoice_id: InvoiceFact(invoice_id, merged_status, merged_failed_at, merged_settled_at)}

    @event(SubscriptionStatusRecorded)
    def _subscription_status_recorded(self, stripe_event_id: str, subscription_id: str, status: str,
                                      occurred_at: datetime) -> None:
        self.seen.add(stripe_event_id)
        self.subscriptions[subscription_id] = status

    @event(DestructiveActionRejected)
    def _destructive_action_rejected(self, action: str, actor_id: UUID) -> None:
        self.rejected_actions.append(action)


ESCALATIONS: dict[EnforcementState, type[BillingAccount.Transitioned]] = {
    EnforcementState.WARNED: BillingAccount.Warned,
    EnforcementState.FINAL_WARNING: BillingAccount.FinalWarningIssued,
    EnforcementState.SUSPENDED: BillingAccount.Suspended,
}
TRANSITIONS = (*ESCALATIONS.values(), BillingAccount.Restored)


def _invoice_fact(invoice_id: str, status: str, failed: bool, occurred_at: datetime) -> InvoiceFact:
    settled = occurred_at if RANK[status] >= SETTLED else None
    return InvoiceFact(invoice_id, status, occurred_at if failed else None, settled)


class StripeEvent(Aggregate):
    """One Stripe event as received: its id derives from Stripe's, so a redelivery collides in the store."""

    TOPIC = "zlh.StripeEvent"

    class Event(Aggregate.Event):
        TOPIC = "zlh.StripeEvent.Event"

    class Received(Event, Aggregate.Created):
        TOPIC = "zlh.StripeEvent.Received"
        stripe_id: str
        type: str
        created: datetime
        livemode: bool
        customer_id: str | None
        object_id: str | None
        payload_sha256: str
        fact: dict[str, Any] | None

    @staticmethod
    def create_id(stripe_id: str) -> UUID:
        return stripe_event_id(stripe_id)

    @event(Received)
    def __init__(self, stripe_id: str, type: str, created: datetime, livemode: bool,
                 customer_id: str | None, object_id: str | None, payload_sha256: str,
                 fact: dict[str, Any] | None) -> None:
        self.stripe_id, self.type, self.created, self.livemode = stripe_id, type, created, livemode
        self.customer_id, self.object_id, self.payload_sha256, self.fact = customer_id, object_id, payload_sha256, fact


class StripeCustomer(Aggregate):
    """A Stripe customer id: which user it belongs to, and the events kept until it is linked."""

    TOPIC = "zlh.StripeCustomer"

    class Event(Aggregate.Event):
        TOPIC = "zlh.StripeCustomer.Event"

    class Seen(Event, Aggregate.Created):
        TOPIC = "zlh.StripeCustomer.Seen"
        customer_id: str

    class EventKept(Event):
        TOPIC = "zlh.StripeCustomer.EventKept"
        stripe_id: str

    class Linked(Event):
        TOPIC = "zlh.StripeCustomer.Linked"
        user_id: UUID
        applied: list[str]

    @staticmethod
    def create_id(customer_id: str) -> UUID:
        return stripe_customer_id(customer_id)

    @event(Seen)
    def __init__(self, customer_id: str) -> None:
        self.customer_id = customer_id
        self.user_id: UUID | None = None
        self.kept: list[str] = []

    def keep(self, stripe_id: str) -> None:
        if self.user_id is not None:
            raise ValueError("a linked customer's events are applied, not kept")
        self._event_kept(stripe_id=stripe_id)

    def link(self, user_id: UUID) -> list[str]:
        """Link to `user_id`; return the kept events to apply now."""
        if self.user_id is not None and self.user_id != user_id:
            raise CustomerLinkedElsewhereError("this Stripe customer is linked to another user")
        kept = list(self.kept)
        if self.user_id is None or kept:
            self._linked(user_id=user_id, applied=kept)
        return kept

    @event(EventKept)
    def _event_kept(self, stripe_id: str) -> None:
        self.kept.append(stripe_id)

    @event(Linked)
    def _linked(self, user_id: UUID, applied: list[str]) -> None:
        self.user_id = user_id
        self.kept = []
