"""Use case: triage diagnostics for the staff desk, read-only, computed when staff open a ticket.

For the ticket's customer: who they are and their billing state; for the instance the ticket
names: its status, address and node, its last operations with their errors, the controller's
drift findings and repairs for it, and its recent console lines (through the driver's
`console_log`; staff only, never shown to the customer). Nothing here writes to the log or
acts on anything, and nothing reads the ticket's text: the controller never acts on what a
customer wrote.

`node` is null: this version records no node placement (one embedded node runs everything).
When multi-node placement lands, the instance's node goes there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.reconcile import instance_target
from domain.support import SupportTicket
from domain.user import User
from projections import billing as billing_view
from projections import instances as instances_view
from projections import operations as operations_view
from projections import repairs as repairs_view
from projections.base import Database
from services.infrastructure.store import ZLH
from services.ports import InstanceDriver, InstanceSpec

CONSOLE_LINES = 50
NODE_NOTE = "node placement is not recorded by this version: every instance runs on the embedded node"


def _console(driver: InstanceDriver, row: dict[str, Any]) -> dict[str, Any]:
    spec = InstanceSpec(UUID(row["id"]), row["kind"], row["template"], row["edge_name"])
    try:
        text = driver.console_log(spec, CONSOLE_LINES)
    except Exception as exc:  # the node may be down, the instance gone: say so, never fail the triage
        code = getattr(exc, "code", type(exc).__name__)
        return {"lines": [], "error": f"{code}: {getattr(exc, 'message', str(exc))}"[:300]}
    return {"lines": text.splitlines()[-CONSOLE_LINES:], "error": None}


def triage(app: ZLH, db: Database, driver: InstanceDriver, ticket: SupportTicket,
           now: datetime | None = None) -> dict[str, Any]:
    owner = app.find(ticket.owner_id, User)
    billing = billing_view.get_for_user(db, str(ticket.owner_id))
    customer = {
        "id": str(ticket.owner_id), "email": ticket.email,
        "disabled": bool(owner.disabled) if owner is not None else None,
        "billing": {"state": billing["state"] if billing else "good_standing",
                    "since": billing["since"] if billing else None,
                    "next_step_at": billing["next_step_at"] if billing else None,
                    "stripe_customer_id": billing["customer_id"] if billing else None},
        "instances": [{"id": r["id"], "name": r["name"], "kind": r["kind"], "status": r["status"]}
                      for r in instances_view.list_for_owner(db, str(ticket.owner_id))],
    }
    out: dict[str, Any] = {
        "ticket": {"id": str(ticket.id), "number": ticket.number, "status": ticket.status},
        "customer": customer, "instance": None, "node": None, "node_note": NODE_NOTE,
        "operations": [], "drift": None, "repairs": [], "console": None,
        "computed_at": (now or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    if ticket.instance_id is None:
        return out
    row = instances_view.get(db, str(ticket.instance_id))
    if row is None:
        out["instance"] = {"id": str(ticket.instance_id), "status": "unknown"}
        return out
    out["instance"] = {k: row[k] for k in ("id", "name", "kind", "template", "status", "address", "port",
                                           "edge_name", "pending_operation", "created_at", "updated_at")}
    target = instance_target(ticket.instance_id)
    out["operations"] = operations_view.for_instance(db, row["id"], 10)
    out["drift"] = repairs_view.drift_of(db, target)
    out["repairs"] = repairs_view.for_target(db, target, row["id"], 10)
    out["console"] = _console(driver, row) if row["status"] not in ("deleted", "provisioning") else \
        {"lines": [], "error": f"no console while the instance is {row['status']}"}
    return out
