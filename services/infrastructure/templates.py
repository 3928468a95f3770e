"""The template catalogue: the templates shipped in this package, and the operator's in `ZLH_TEMPLATES_DIR`.

The shipped templates are the `*.toml` files in `services/templates/` (package data): `minecraft`
(flying-squid), `paper`, `python` (JupyterLab) and `node` (code-server). An operator adds
templates as `*.toml` files in `ZLH_TEMPLATES_DIR`, one per template, named after it. A file
whose name is a shipped template's replaces it; a file with `extends = "NAME"` starts from the
shipped template NAME and changes what it sets (tables are merged key by key, arrays such as
`install` and `files` are replaced whole), e.g. to configure Paper's jar or to offer a
`minecraft-creative` with other defaults. Files are read once, at start-up; a file that is not
a valid template stops the start-up with a message naming the file and the key.

`TemplateCatalogue.resolve` checks a customer's variables (generating the per-instance
tokens a template asks for); `spec` builds the `InstanceSpec` a driver gets, with the
template definition the node agent runs.
"""

from __future__ import annotations

import functools
import logging
import secrets
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import UUID

from domain.templates import (
    KINDS,
    TemplateError,
    UnknownTemplateError,
    Value,
    validate_variables,
)
from domain.templates import Template as Template
from services.ports import InstanceSpec

log = logging.getLogger(__name__)

#: Where the shipped templates are: `services/templates/*.toml`.
PACKAGE, FOLDER = "services", "templates"


class TemplateCatalogue:
    """The templates on offer, by name (a name is unique across kinds)."""

    def __init__(self, templates: Mapping[str, Template]) -> None:
        self._templates = dict(templates)

    @classmethod
    def load(cls, operator_dir: str | Path | None = None) -> TemplateCatalogue:
        """The shipped templates, then the operator's; `TemplateError` naming the file for a bad one."""
        shipped = _shipped_sources()
        sources: dict[str, tuple[str, dict[str, Any]]] = {n: (f"shipped template {n}", d) for n, d in shipped.items()}
        if operator_dir:
            directory = Path(operator_dir)
            if not directory.is_dir():
                raise TemplateError(f"ZLH_TEMPLATES_DIR {directory} is not a directory")
            for path in sorted(directory.glob("*.toml")):
                data = _read(path.stem, path.read_text(encoding="utf-8"), str(path))
                base = data.pop("extends", None)
                if base is not None:
                    if base not in shipped:
                        raise TemplateError(f"{path}: extends = {base!r}, which is not a shipped template "
                                            f"({', '.join(sorted(shipped))})")
                    base_data = dict(shipped[base])
                    base_data.pop("name", None)
                    data = _merge(base_data, data)
                sources[path.stem] = (str(path), data)
        templates = {}
        for name, (where, data) in sources.items():
            try:
                templates[name] = Template.from_dict(name, data)
            except TemplateError as exc:
                raise TemplateError(f"{where}: {exc.message}") from None
        return cls(templates)

    def all(self) -> list[Template]:
        """Every template, by kind then name."""
        return sorted(self._templates.values(), key=lambda t: (KINDS.index(t.kind), t.name))

    def find(self, name: str) -> Template | None:
        return self._templates.get(name)

    def get(self, kind: str, name: str) -> Template:
        """The template `name` for `kind`; `UnknownTemplateError` (422 `unknown_template`) otherwise."""
        template = self._templates.get(name)
        if template is None or template.kind != kind:
            offered = ", ".join(t.name for t in self.all() if t.kind == kind) or "none"
            raise UnknownTemplateError(f"template {name!r} is not offered for {kind} instances (use {offered})")
        return template

    def resolve(self, kind: str, name: str, given: Mapping[str, Any] | None) -> dict[str, Value]:
        """The variables an instance of template `name` gets: checked, defaulted, tokens generated."""
        template = self.get(kind, name)
        generated = {v.name: secrets.token_urlsafe(24) for v in template.variables if v.generate}
        return validate_variables(template, given, generated)

    def spec(self, instance_id: UUID, kind: str, template: str, edge_name: str,
             variables: Mapping[str, Value] | None = None) -> InstanceSpec:
        """What a driver gets: the instance, its variables (defaults filled in for variables the template
        gained since), and the template definition (None if the template is no longer offered)."""
        definition = self._templates.get(template)
        values = dict(variables or {})
        if definition is not None:
            for variable in definition.variables:
                if variable.name not in values and variable.default is not None:
                    values[variable.name] = variable.default
        return InstanceSpec(instance_id, kind, template, edge_name, variables=values, definition=definition)

    def spec_of(self, instance: Any) -> InstanceSpec:
        """`spec` for an `Instance` aggregate."""
        return self.spec(instance.id, instance.kind.value, instance.template, instance.edge_name,
                         getattr(instance, "variables", None))


@functools.cache
def shipped_catalogue() -> TemplateCatalogue:
    """The shipped templates alone (what a control plane without `ZLH_TEMPLATES_DIR` offers)."""
    return TemplateCatalogue.load(None)


def _shipped_sources() -> dict[str, dict[str, Any]]:
    found = {}
    for entry in resources.files(PACKAGE).joinpath(FOLDER).iterdir():
        if entry.name.endswith(".toml"):
            name = entry.name.removesuffix(".toml")
            found[name] = _read(name, entry.read_text(encoding="utf-8"), f"shipped template {name}")
    return found


def _read(name: str, text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{where}: not valid TOML: {exc}") from None


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it: tables merged key by key, anything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
