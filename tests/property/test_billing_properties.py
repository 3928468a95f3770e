"""Hypothesis: billing state is order-free, idempotent, monotone in time; and billing never deletes anything."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from hypothesis import event as hypothesis_event
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from domain.billing import (
    DESTRUCTIVE_ACTIONS,
    BillingAccount,
    DestructiveActionRejectedError,
    EnforcementState,
    InvoiceFact,
    Schedule,
    assess,
    severity,
)
from domain.errors import DomainError
from domain.instance import Instance
from domain.user import User
from services import billing
from services.instances import request_instance
from services.lifecycle import request_backup, request_power
from services.workers.billing import BillingManager
from tests.billing_fixtures import invoice_event
from tests.property.machines import StoreMachine

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SCHEDULE = Schedule.of(3 * 86400, 7 * 86400)
FW, SA = SCHEDULE.final_warning_after, SCHEDULE.suspend_after

# A delivery: (stripe event id, invoice, status, failed?, created seconds after T0). Same id => same payload.
statuses = st.sampled_from([("open", True), ("paid", False), ("void", False), ("uncollectible", False)])


@st.composite
def deliveries(draw: Any) -> tuple[list[tuple[str, InvoiceFact]], list[tuple[str, InvoiceFact]]]:
    n = draw(st.integers(0, 10))
    base = []
    for i in range(n):
        status, failed = draw(statuses)
        created = T0 + timedelta(seconds=draw(st.integers(0, 10 * 86400)))
        invoice = f"in_{draw(st.integers(0, 3))}"
        base.append((f"evt_{i}", InvoiceFact(invoice, status, created if failed else None,
                                             created if status in ("paid", "void") else None)))
    dups = draw(st.lists(st.sampled_from(base), max_size=8)) if base else []
    return base, draw(st.permutations(base + dups))


def account_from(delivered: list[tuple[str, InvoiceFact]]) -> BillingAccount:
    account = BillingAccount(user_id=UUID(int=1), email="a@example.com")
    for stripe_id, fact in delivered:
        occurred = fact.failed_at or fact.settled_at or T0
        account.record_fact(stripe_id, {"kind": "invoice", "invoice_id": fact.invoice_id, "status": fact.status,
                                        "failed": fact.failed_at is not None}, occurred, SCHEDULE)
    return account


@given(deliveries(), st.integers(0, 30 * 86400))
def test_any_order_and_duplication_ends_in_the_same_state(pair: Any, seconds: int) -> None:
    base, delivered = pair
    now = T0 + timedelta(seconds=seconds)
    a, b = account_from(base), account_from(delivered)
    assert a.invoices == b.invoices
    assert assess(a.invoices, now, FW, SA) == assess(b.invoices, now, FW, SA)
    a.enforce(now, SCHEDULE)
    b.enforce(now, SCHEDULE)
    assert (a.state, a.since) == (b.state, b.since)


@given(deliveries(), st.integers(0, 30 * 86400), st.integers(0, 30 * 86400))
def test_severity_never_decreases_with_time_while_the_facts_stay(pair: Any, s1: int, s2: int) -> None:
    invoices = account_from(pair[1]).invoices
    early, late = sorted((s1, s2))
    first = assess(invoices, T0 + timedelta(seconds=early), FW, SA)
    second = assess(invoices, T0 + timedelta(seconds=late), FW, SA)
    assert severity(first.state) <= severity(second.state)


@given(deliveries(), st.integers(0, 30 * 86400))
def test_all_invoices_paid_or_void_is_good_standing(pair: Any, seconds: int) -> None:
    base, _ = pair
    settle = [(f"{sid}_settled", InvoiceFact(f.invoice_id, "paid", None, T0)) for sid, f in base]
    account = account_from([*base, *settle])
    assert assess(account.invoices, T0 + timedelta(seconds=seconds), FW, SA).state is EnforcementState.GOOD_STANDING


@given(deliveries(), st.integers(0, 30 * 86400))
def test_steps_are_never_skipped(pair: Any, seconds: int) -> None:
    account = account_from(pair[1])
    account.enforce(T0 + timedelta(seconds=seconds), SCHEDULE)
    states = [e.state for e in account.collect_events() if isinstance(e, BillingAccount.Transitioned)]
    for before, after in zip(["good_standing", *states], states, strict=False):
        if severity(after) > severity(before):
            assert severity(after) == severity(before) + 1


class NothingIsDeleted(StoreMachine):
    """Webhooks in any order, duplicates, time passing, workers, staff "delete" attempts: nothing is removed."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.billing = BillingManager(self.app, self.db, SCHEDULE, now=lambda: self.now)
        user = User(email="owner@example.com", admin=False)
        self.app.save(user)
        self.owner = user.id
        billing.link_customer(self.app, self.owner, "cus_1", SCHEDULE)
        self.running = request_instance(self.app, self.owner, "k1", "game", "alpha", "minecraft").instance_id
        self.stopped = request_instance(self.app, self.owner, "k2", "dev", "beta", "python").instance_id
        self._provision()
        request_power(self.app, self.owner, self.stopped, "stop")
        request_backup(self.app, self.owner, self.running)
        self._provision()
        self.snapshot = self._observe()
        self.sent: list[dict[str, Any]] = []

    def _observe(self) -> dict[str, Any]:
        d, edge = self.driver, self.edge
        return {"files": repr(sorted((str(k), sorted(v.items())) for k, v in d.files.items())),
                "backups": repr(sorted((str(k), v[0]) for k, v in d.backups.items())),
                "dns": repr(edge.dns.list_records()), "proxy": repr(sorted(edge.proxy.list_servers().items())),
                "directories": repr(sorted(d.directories.items()))}

    def _provision(self) -> None:
        for instance_id in (getattr(self, "running", None), getattr(self, "stopped", None)):
            if instance_id is None:
                continue
            self.run_pending(instance_id)
        self.catch_up()

    @rule(invoice=st.integers(0, 2), kind=st.sampled_from(["payment_failed", "paid", "voided"]),
          ago=st.integers(0, 9 * 86400))
    def deliver(self, invoice: int, kind: str, ago: int) -> None:
        created = int((self.now - timedelta(seconds=ago)).timestamp())
        event = invoice_event(f"evt_{len(self.sent)}", kind, f"in_{invoice}", "cus_1", created)
        self.sent.append(event)
        assert not billing.record_stripe_event(self.app, event, b"{}", SCHEDULE).duplicate

    @rule(pick=st.integers(0, 50))
    def redeliver(self, pick: int) -> None:
        if self.sent:
            assert billing.record_stripe_event(self.app, self.sent[pick % len(self.sent)], b"{}", SCHEDULE).duplicate

    @rule(seconds=st.integers(0, 4 * 86400))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(action=st.sampled_from(sorted(DESTRUCTIVE_ACTIONS)))
    def staff_tries_to_delete(self, action: str) -> None:
        try:
            billing.reject_destructive(self.app, self.owner, action, UUID(int=7))
        except DestructiveActionRejectedError:
            return
        raise AssertionError("a destructive action was not rejected")

    @rule(action=st.sampled_from(["start", "restart"]))
    def customer_power(self, action: str) -> None:
        with contextlib.suppress(DomainError):
            request_power(self.app, self.owner, self.stopped, action)

    @rule()
    def work(self) -> None:
        for _ in range(3):
            self.catch_up()
            while self.billing.dispatch_page():
                pass
            self.billing.sweep()
            self._provision()
        account = billing.load_account(self.app, self.owner)
        assert account is not None
        alpha: Instance = self.app.repository.get(self.running)
        if account.state is EnforcementState.SUSPENDED:
            for instance_id in (self.running, self.stopped):
                instance: Instance = self.app.repository.get(instance_id)
                assert "billing" in instance.suspension_reasons
                assert instance_id not in self.driver.processes  # stopped, never deleted
                hypothesis_event("suspended")
        elif alpha.pending_operation_id is None:
            assert "billing" not in alpha.suspension_reasons
            assert alpha.status.value == "running"

    @invariant()
    def nothing_is_deleted(self) -> None:
        assert self._observe() == self.snapshot
        assert not [c for c in self.driver.calls if c[0].startswith(("remove_", "delete_"))]
        for instance_id in (self.running, self.stopped):
            instance: Instance = self.app.repository.get(instance_id)
            assert instance.status.value not in ("deleting", "deleted")

TestNothingIsDeleted = NothingIsDeleted.TestCase
