"""The template catalogue: which templates each kind of instance may use."""

from __future__ import annotations

from domain.errors import DomainError

TEMPLATES: dict[str, frozenset[str]] = {
    "game": frozenset({"minecraft", "paper"}),
    "dev": frozenset({"python", "node"}),
}


class UnknownTemplateError(DomainError):
    code = "unknown_template"


def check_template(kind: str, template: str) -> None:
    if template not in TEMPLATES.get(kind, frozenset()):
        allowed = ", ".join(sorted(TEMPLATES.get(kind, ())))
        raise UnknownTemplateError(f"template {template!r} is not offered for {kind} instances (use {allowed})")
