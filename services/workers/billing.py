"""The billing enforcement process manager (`zlh worker billing`).

It follows the log. A new fact on an account (or a customer link) wakes it to
re-assess the account: the transitions the facts call for are appended, one step at a
time, with the account stream's optimistic concurrency (two workers: one wins, the
other finds nothing left to do). A durable timer does the same for accounts whose
`next_step_at` (in the billing read model) has passed.

Each transition read from the log triggers the effects `domain.billing.effects_for`
names, from the closed `Effect` allow-list, each keyed by the transition event: the
announcement's id and the stop/start operations' ids derive from it, and instances
already carrying (or no longer carrying) the `billing` reason are left alone, so a
replay or a rebuild never re-sends or re-stops. An effect that must wait (an instance
with another operation pending) is retried by the timer. Nothing here can delete.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification

from domain.announcement import Announcement
from domain.billing import (
    TRANSITIONS,
    BillingAccount,
    Effect,
    EnforcementState,
    Schedule,
    billing_operation_key,
    effects_for,
)
from domain.errors import DomainError, OperationInProgressError
from domain.ids import derive
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.operation import Operation
from projections import billing as billing_view
from projections import instances as instances_view
from services.infrastructure.database import ReadModelDB
from services.infrastructure.log_following import LogFollower, Wakeup
from services.infrastructure.store import ZLH
from services.instances import fingerprint

log = logging.getLogger(__name__)

POSITION = "billing_enforcement"  # not "billing": that is the projection's
REASON = "billing"
WAKE_TOPICS = frozenset({BillingAccount.InvoiceFactRecorded.TOPIC, BillingAccount.CustomerLinked.TOPIC})
TRANSITION_TOPICS = frozenset(c.TOPIC for c in TRANSITIONS)

NOTICES: dict[str, tuple[str, str, str]] = {
    "warned": ("warning", "Payment failed",
               "We could not collect your last payment. Please update your payment method. Your servers keep "
               "running; new backups pause on {final}, and servers are stopped (never deleted) on {suspend}."),
    "final_warning": ("critical", "Final notice: payment overdue",
                      "Your payment is still overdue. New backups are paused (existing ones are kept). On {suspend} "
                      "your servers will be stopped until the invoice is paid. Nothing is ever deleted."),
    "suspended": ("critical", "Servers suspended for non-payment",
                  "Your servers are stopped because an invoice is unpaid. Your files, backups and addresses are "
                  "kept. Pay the invoice and the servers we stopped start again automatically."),
    "good_standing": ("info", "Payment received",
                      "Thank you: your account is in good standing again. Anything we stopped is starting again."),
}


def announcement_id(account_id: UUID, version: int) -> UUID:
    return derive("billing-announcement", account_id, version)


def notice(state: str, since: datetime | None, anchor: datetime | None, schedule: Schedule) -> tuple[str, str, str]:
    """The (level, title, body) a customer reads when the account enters `state`."""
    level, title, body = NOTICES[state]
    fmt = "%Y-%m-%d %H:%M UTC"
    final = (anchor + schedule.final_warning_after).strftime(fmt) if anchor else "later"
    suspend = (anchor + schedule.suspend_after).strftime(fmt) if anchor else "later"
    return level, title, body.format(final=final, suspend=suspend)


class BillingManager:
    def __init__(self, app: ZLH, db: ReadModelDB, schedule: Schedule,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), full_sweep_every: float = 30.0) -> None:
        self.app, self.db, self.schedule, self.now = app, db, schedule, now
        self.stop_event = threading.Event()
        self.follower = LogFollower(POSITION, app, db, self._dispatch, topics=WAKE_TOPICS | TRANSITION_TOPICS,
                                    after_drain=self.sweep)
        self.full_sweep_every = full_sweep_every
        self._outstanding: set[UUID] = set()  # accounts whose instance effects must be retried
        self._last_full_sweep = float("-inf")
        self.handlers: dict[Effect, Callable[[BillingAccount, Any], None]] = {
            Effect.NOTIFY: self._notify,
            Effect.BLOCK_BACKUPS: self._block_backups,
            Effect.STOP_INSTANCES: self._reconcile_effect,
            Effect.LIFT_GATES: self._reconcile_effect,
            Effect.START_INSTANCES: self._reconcile_effect,
        }

    def position(self) -> int:
        return self.follower.position()

    # Following the log.

    def dispatch_page(self) -> int:
        return self.follower.process_page()

    def _dispatch(self, notification: Notification) -> None:
        if notification.topic in WAKE_TOPICS:
            self.evaluate(notification.originator_id)
        else:
            self.apply_effects(self.app.mapper.to_domain_event(notification))

    def evaluate(self, account_id: UUID) -> list[EnforcementState]:
        """Append the transitions the account's facts call for now (optimistic concurrency; retried)."""
        for _ in range(20):
            account = self.app.find(account_id, BillingAccount)
            if account is None:
                return []
            entered = account.enforce(self.now(), self.schedule)
            if not entered:
                return []
            try:
                self.app.save(account)
            except IntegrityError:
                continue  # someone else appended first: assess again on fresh state
            log.info("billing account %s entered %s", account_id, [s.value for s in entered])
            return entered
        raise RuntimeError(f"billing account {account_id}: too much contention")

    def apply_effects(self, transition: BillingAccount.Transitioned) -> None:
        """Run the allow-listed effects of one recorded transition (each idempotent, keyed by it)."""
        account: BillingAccount = self.app.repository.get(transition.originator_id)
        for effect in effects_for(EnforcementState(transition.state), EnforcementState(transition.previous)):
            self.handlers[effect](account, transition)

    # Effects.

    def _notify(self, account: BillingAccount, transition: Any) -> None:
        """The announcement (the email is planned by the notifications worker from the same event)."""
        version = transition.originator_version
        for earlier in self.app.stream(account.id):
            if isinstance(earlier, BillingAccount.Transitioned) and earlier.originator_version < version:
                self._withdraw(announcement_id(account.id, earlier.originator_version))
        level, title, body = notice(transition.state, transition.since, account.anchor, self.schedule)
        ends_at = transition.timestamp + timedelta(days=7) if transition.state == "good_standing" else None
        announcement = Announcement.publish(level, title, body, account.user_id, None, ends_at, "billing",
                                            announcement_id=announcement_id(account.id, version))
        with contextlib.suppress(IntegrityError):  # announced already: a replay
            self.app.save(announcement)

    def _withdraw(self, aid: UUID) -> None:
        announcement = self.app.find(aid, Announcement)
        if announcement is not None and not announcement.withdrawn:
            announcement.withdraw()
            with contextlib.suppress(IntegrityError):
                self.app.save(announcement)

    def _block_backups(self, account: BillingAccount, transition: Any) -> None:
        """Nothing to do: the backup gate reads the recorded state (API and provisioning both check it)."""
        log.info("backups blocked for billing account %s", account.id)

    def _reconcile_effect(self, account: BillingAccount, transition: Any) -> None:
        if not self.reconcile_instances(account.id):
            self._outstanding.add(account.id)

    def reconcile_instances(self, account_id: UUID) -> bool:
        """Level-triggered: every instance carries the `billing` reason iff the account is suspended.

        Suspending a running server also queues its stop; lifting the reason from a server billing
        stopped queues its start. Both operations' ids derive from the transition that entered the
        current state. Returns False when some instance must wait for a pending operation.
        """
        account = self.app.find(account_id, BillingAccount)
        if account is None:
            return True  # no account, no billing reason on any instance
        suspended = account.state is EnforcementState.SUSPENDED
        done = True
        for row in instances_view.list_for_owner(self.db, str(account.user_id)):
            for _ in range(10):
                instance: Instance = self.app.repository.get(UUID(row["id"]))
                try:
                    changed = self._suspend(account, instance) if suspended else self._lift(account, instance)
                except OperationInProgressError:
                    done = False
                    break
                except IntegrityError:
                    continue  # the instance moved meanwhile: look again
                except DomainError as exc:
                    log.info("instance %s left as it is: %s", instance.id, exc)
                    break
                if changed:
                    log.info("instance %s %s for billing", instance.id, "suspended" if suspended else "released")
                break
        return done

    def _operation(self, account: BillingAccount, instance: Instance, action: str) -> Operation:
        params = {"action": action}
        return Operation(request_key=billing_operation_key(account.id, account.state_version or 0, instance.id),
                         kind=action, instance_id=instance.id, owner_id=instance.owner_id,
                         fingerprint=fingerprint(f"{action} {instance.id}", params), params=params)

    def _suspend(self, account: BillingAccount, instance: Instance) -> bool:
        if REASON in instance.suspension_reasons or instance.status in (
                InstanceStatus.FAILED, InstanceStatus.DELETING, InstanceStatus.DELETED):
            return False
        stop = self._operation(account, instance, "stop") if instance.status is InstanceStatus.RUNNING else None
        instance.suspend(REASON, stop.id if stop else None)
        self.app.save(instance, *([stop] if stop else []))
        return True

    def _lift(self, account: BillingAccount, instance: Instance) -> bool:
        if REASON not in instance.suspension_reasons:
            return False
        restart = (instance.status is InstanceStatus.SUSPENDED and instance.resume_when_unsuspended
                   and instance.suspension_reasons == {REASON})
        start = self._operation(account, instance, "start") if restart else None
        instance.unsuspend(REASON, start.id if start else None)
        self.app.save(instance, *([start] if start else []))
        return True

    # The durable timer.

    def sweep(self) -> None:
        """Assess accounts whose next step is due; retry waiting effects; now and then check every account."""
        for row in billing_view.due(self.db, self.now()):
            self.evaluate(UUID(row["account_id"]))
        for account_id in list(self._outstanding):
            if self.reconcile_instances(account_id):
                self._outstanding.discard(account_id)
        if time.monotonic() - self._last_full_sweep >= self.full_sweep_every:
            self._last_full_sweep = time.monotonic()
            self.full_sweep()

    def full_sweep(self) -> None:
        """Every suspended account, and every account with billing-suspended instances, reconciled."""
        from domain.billing import account_id as account_of

        owners = set(billing_view.suspended_users(self.db))
        owners |= {r["owner_id"] for r in self.db.query(
            "SELECT DISTINCT owner_id FROM rm_instances WHERE status = 'suspended'")}
        for owner in owners:
            aid = account_of(UUID(owner))
            if not self.reconcile_instances(aid):
                self._outstanding.add(aid)

    def run(self, wakeup: Wakeup) -> None:
        self.follower.run(self.stop_event, wakeup)
