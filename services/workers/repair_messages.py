"""Staff alerts for repairs: every executed, failed or escalated repair, through the notifications port."""

from __future__ import annotations

from typing import Any

from domain.repair import Repair

Planned = tuple[str, str, dict[str, Any]]


def repair_messages(event: Any) -> list[Planned]:
    """A Discord alert (recorded when no webhook is configured) per repair outcome."""
    if isinstance(event, Repair.Succeeded):
        title, level, detail = f"Repair done: {event.kind}", "info", _result(event.result)
    elif isinstance(event, Repair.Failed):
        permanence = "permanent" if event.permanent else "temporary"
        detail = f"{event.code} ({permanence}): {event.message}"
        title, level = f"Repair failed: {event.kind}", "warning"
    elif isinstance(event, Repair.Escalated):
        title, level, detail = f"Repair escalated: {event.kind}", "critical", event.reason
    else:
        return []
    return [("discord", "repair_alert", {
        "title": title,
        "description": detail,
        "fields": [["Target", event.target], ["Repair", str(event.originator_id)], ["Epoch", str(event.epoch)]],
        "level": level,
    })]


def _result(result: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(result.items())) or "done"
