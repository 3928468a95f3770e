"""Stripe-shaped test events and signatures (signed with the stripe library, as Stripe would)."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe

SECRET = "whsec_test_billing_secret"


def invoice_event(event_id: str, kind: str, invoice: str, customer: str, created: int) -> dict[str, Any]:
    """`kind`: payment_failed | paid | voided | payment_succeeded | marked_uncollectible."""
    status = {"payment_failed": "open", "paid": "paid", "payment_succeeded": "paid", "voided": "void",
              "marked_uncollectible": "uncollectible"}[kind]
    return {"id": event_id, "object": "event", "type": f"invoice.{kind}", "created": created, "livemode": False,
            "api_version": "2026-10-28.endive",
            "data": {"object": {"id": invoice, "object": "invoice", "customer": customer, "status": status,
                                "attempt_count": 1}}}


def body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def sign(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp)


def signed_headers(payload: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {"Stripe-Signature": sign(payload, secret, timestamp), "Content-Type": "application/json"}
