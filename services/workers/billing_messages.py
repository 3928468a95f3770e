"""Billing messages for the notifications worker: customer emails per transition, staff alerts for disputes."""

from __future__ import annotations

from typing import Any

from domain.billing import BillingAccount, StripeEvent

Planned = tuple[str, str, dict[str, Any]]

SUBJECTS = {
    "warned": "Payment failed: please update your payment method",
    "final_warning": "Final notice: new backups are paused until your invoice is paid",
    "suspended": "Your servers are suspended for non-payment (nothing is deleted)",
    "good_standing": "Payment received: your account is in good standing",
}

BODIES = {
    "warned": "We could not collect your last payment. Your servers keep running. If the invoice stays unpaid, "
              "new backups pause at the final notice and the servers are later stopped (never deleted).",
    "final_warning": "Your invoice is still unpaid. New backups are paused; existing backups are kept. If it stays "
                     "unpaid, your servers will be stopped (never deleted) until it is paid.",
    "suspended": "Your servers are stopped because an invoice is unpaid. Files, backups and addresses are kept. "
                 "Once the invoice is paid, the servers we stopped start again by themselves.",
    "good_standing": "Thank you, your payment arrived. Everything billing paused is lifted, and the servers we "
                     "stopped are starting again.",
}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else "-"


def billing_messages(event: Any) -> list[Planned]:
    """An email to the customer for every recorded transition; a staff alert for disputes."""
    if isinstance(event, BillingAccount.Transitioned):
        body = f"Hello,\n\n{BODIES[event.state]}\n\n"
        if event.next_step_at is not None:
            body += f"Next step: {_when(event.next_step_at)}.\n\n"
        return [("email", f"billing_{event.state}", {
            "to": event.email, "subject": f"[ZLH] {SUBJECTS[event.state]}", "body": body + "-- ZLH Billing\n"})]
    if isinstance(event, StripeEvent.Received) and event.type.startswith("charge.dispute."):
        return [("discord", "billing_dispute", {
            "title": f"Stripe dispute: {event.type.removeprefix('charge.dispute.')}",
            "description": "A payment is disputed. Billing enforcement does not act on disputes; please review.",
            "fields": [["Stripe event", event.stripe_id], ["Object", event.object_id or "-"],
                       ["Customer", event.customer_id or "-"]],
            "level": "warning",
        })]
    return []
