"""Billing: signature checks on the raw body, the schedule, the effect allow-list, gates and instance suspension."""

from __future__ import annotations

import ast
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
import stripe

from domain.billing import (
    BackupsBlockedError,
    BillingSuspendedError,
    Effect,
    EnforcementState,
    InvoiceFact,
    assess,
    check_gate,
    effects_for,
    steps_between,
)
from domain.errors import OperationInProgressError
from domain.instance import Instance
from services.billing import BadSignatureError, verify_webhook
from tests.billing_fixtures import SECRET, body, invoice_event, sign

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86400


def _payload() -> bytes:
    return body(invoice_event("evt_1", "payment_failed", "in_1", "cus_1", int(time.time())))


def test_a_correctly_signed_body_verifies() -> None:
    payload = _payload()
    assert verify_webhook(payload, sign(payload), SECRET)["id"] == "evt_1"
    assert verify_webhook(payload, sign(payload, timestamp=int(time.time()) - 299), SECRET)["id"] == "evt_1"


@pytest.mark.parametrize("case", ["wrong_secret", "tampered", "missing", "no_v1", "old_301", "future", "garbage"])
def test_bad_signatures_are_rejected(case: str) -> None:
    payload, now = _payload(), int(time.time())
    header = {
        "wrong_secret": sign(payload, "whsec_other"),
        "tampered": sign(payload),
        "missing": None,
        "no_v1": sign(payload).replace("v1=", "v0="),
        "old_301": sign(payload, timestamp=now - 301),
        "future": sign(payload, timestamp=now + 301),
        "garbage": "nonsense",
    }[case]
    if case == "tampered":
        payload = payload.replace(b"in_1", b"in_2")
    with pytest.raises(BadSignatureError):
        verify_webhook(payload, header, SECRET)


def test_two_v1_signatures_during_a_secret_roll_pass_if_one_matches() -> None:
    payload, now = _payload(), int(time.time())
    old = stripe.WebhookSignature._compute_signature(f"{now}.{payload.decode()}", "whsec_old")
    new = stripe.WebhookSignature._compute_signature(f"{now}.{payload.decode()}", SECRET)
    assert verify_webhook(payload, f"t={now},v1={old},v1={new}", SECRET)["id"] == "evt_1"
    with pytest.raises(BadSignatureError):
        verify_webhook(payload, f"t={now},v1={old}", SECRET)


def test_the_schedule_by_age_of_the_first_unpaid_failure() -> None:
    facts = [InvoiceFact("in_1", "open", T0), InvoiceFact("in_2", "open", T0 + timedelta(days=2))]
    at = [assess(facts, T0 + timedelta(days=d), 3 * DAY, 7 * DAY) for d in (0, 2.9, 3, 6.9, 7, 30)]
    assert [a.state.value for a in at] == ["warned", "warned", "final_warning", "final_warning", "suspended",
                                           "suspended"]
    assert at[0].since == T0 and at[0].next_step_at == T0 + timedelta(days=3)
    assert at[2].next_step_at == T0 + timedelta(days=7) and at[4].next_step_at is None
    # Paying the older invoice moves the anchor to the newer one; paid beats open in any order.
    paid = [*facts, InvoiceFact("in_1", "paid", None, T0 + timedelta(days=8))]
    assert assess(paid, T0 + timedelta(days=8), 3 * DAY, 7 * DAY).state is EnforcementState.FINAL_WARNING
    assert assess(list(reversed(paid)), T0 + timedelta(days=8), 3 * DAY, 7 * DAY).state.value == "final_warning"
    void = [*paid, InvoiceFact("in_2", "void", None, T0 + timedelta(days=9))]
    assert assess(void, T0 + timedelta(days=9), 3 * DAY, 7 * DAY).state is EnforcementState.GOOD_STANDING
    uncollectible = [InvoiceFact("in_3", "open", T0), InvoiceFact("in_3", "uncollectible")]
    assert assess(uncollectible, T0, 3 * DAY, 7 * DAY).state is EnforcementState.WARNED


def test_steps_up_one_at_a_time_and_straight_down() -> None:
    assert steps_between("good_standing", "suspended") == ["warned", "final_warning", "suspended"]
    assert steps_between("suspended", "good_standing") == ["good_standing"]
    assert steps_between("warned", "warned") == []


def test_effects_are_a_closed_allow_list_without_any_deletion() -> None:
    assert {e.value for e in Effect} == {"notify", "block_backups", "stop_instances", "lift_gates",
                                         "start_instances"}
    for state in EnforcementState:
        for previous in EnforcementState:
            assert set(effects_for(state, previous)) <= set(Effect)
    assert Effect.STOP_INSTANCES in effects_for(EnforcementState.SUSPENDED, EnforcementState.FINAL_WARNING)
    assert Effect.START_INSTANCES in effects_for(EnforcementState.WARNED, EnforcementState.SUSPENDED)


def test_no_billing_code_can_reach_a_delete() -> None:
    forbidden = {"begin_deletion", "request_delete", "delete_backup", "remove_dns", "remove_proxy",
                 "remove_directory", "mark_deleted", "delete"}
    for name in ("domain/billing.py", "services/billing.py", "services/workers/billing.py",
                 "services/workers/billing_messages.py", "api/routers/billing.py"):
        tree = ast.parse((ROOT / name).read_text())
        called = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                  for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not called & forbidden, f"{name} calls {called & forbidden}"


def test_gates() -> None:
    check_gate("warned", "backup")
    with pytest.raises(BackupsBlockedError):
        check_gate("final_warning", "backup")
    check_gate("final_warning", "restore")
    for action in ("create", "start", "restart", "restore", "write_files"):
        with pytest.raises(BillingSuspendedError):
            check_gate("suspended", action)
    for action in ("stop", "delete", "read"):
        check_gate("suspended", action)


def _running_instance() -> Instance:
    create = UUID(int=1)
    instance = Instance(owner_id=UUID(int=2), kind="game", name="a", template="minecraft", edge_name="a-1",
                        operation_id=create)
    instance.provision(create, 30000, "127.0.0.1:30000")
    return instance


def test_suspension_is_a_reason_and_lifting_it_starts_only_what_it_stopped() -> None:
    instance = _running_instance()
    stop, start = UUID(int=10), UUID(int=11)
    assert instance.suspend("billing", stop)
    assert instance.status.value == "suspended" and instance.pending_operation_id == stop
    assert not instance.suspend("billing", stop)  # already: nothing recorded
    with pytest.raises(OperationInProgressError):
        instance.unsuspend("billing", start)  # the stop is still pending
    instance.mark_stopped(stop)
    assert instance.status.value == "suspended" and instance.suspension_reasons == {"billing"}
    assert instance.unsuspend("billing", start)
    assert instance.status.value == "stopped" and instance.pending_operation_id == start
    stopped = _running_instance()
    stopped.begin_operation(UUID(int=20), "stop")
    stopped.mark_stopped(UUID(int=20))
    stopped.suspend("billing")
    stopped.unsuspend("billing", None)
    assert stopped.status.value == "stopped" and stopped.pending_operation_id is None


def test_an_invoice_fact_recorded_before_merged_facts_were_carried_replays_to_the_same_state() -> None:
    """Events without `merged_*` (older logs) merge on replay; newer ones only assign what they carry."""
    from dataclasses import replace

    from domain.billing import BillingAccount, Schedule

    schedule = Schedule.of(3 * DAY, 7 * DAY)
    account = BillingAccount(user_id=UUID(int=1), email="a@example.com")
    facts = [("evt_1", "open", True, T0), ("evt_2", "open", True, T0 + timedelta(days=1)),
             ("evt_3", "paid", False, T0 + timedelta(days=2))]
    for stripe_id, status, failed, at in facts:
        account.record_fact(stripe_id, {"kind": "invoice", "invoice_id": "in_1", "status": status, "failed": failed},
                            at, schedule)
    events = account.collect_events()
    recorded = [e for e in events if isinstance(e, BillingAccount.InvoiceFactRecorded)]
    assert all(e.merged_status is not None for e in recorded)
    legacy = [replace(e, merged_status=None, merged_failed_at=None, merged_settled_at=None)
              if isinstance(e, BillingAccount.InvoiceFactRecorded) else e for e in events]
    replayed, legacy_replayed = None, None
    for e in events:
        replayed = e.mutate(replayed)
    for e in legacy:
        legacy_replayed = e.mutate(legacy_replayed)
    assert replayed is not None and legacy_replayed is not None
    assert replayed.invoices == legacy_replayed.invoices == account.invoices
    assert account.invoices["in_1"] == InvoiceFact("in_1", "paid", T0, T0 + timedelta(days=2))
