"""Templates as data: what runs for each template, and the variables a customer may set.

A template is one TOML document (Pterodactyl's eggs are the model). It names its `kind`
(`game` or `dev`) and describes itself; it declares its variables (type, default,
constraints); its install steps (run once per node into a cache shared by every instance
there); its start command; the command its console takes to stop; a readiness check
(a Minecraft Server List Ping, an HTTP GET answering 2xx, or a console line); the config
files it renders from variables; and default resources. README.md "Templates" shows the
format with an example.

This module is pure: `parse_template` (TOML text) and `Template.from_dict` check a
definition and raise `TemplateError` naming the key; `validate_variables` resolves what a
customer asked for against a template and raises `VariableError` (`validation_error`) naming
the variable; `render` fills placeholders. Reading template files is `services.infrastructure.templates`;
running them is the node agent's (`services.agent`).

Placeholders: `${name}` becomes the value of the variable or built-in `name`, `${name|json}`
its JSON literal (a quoted, escaped string; a bare number; `true`/`false`); `$${` is a
literal `${`. Rendering is a single pass, so a value (a customer's MOTD, say) is never read
for placeholders again. The built-ins are the platform's, never a customer's: `port` and
`instance_id` (the instance), and the node's paths and addresses (`NODE_BUILTINS`). Install
steps run once per node, so they may use only `INSTALL_BUILTINS` and variables customers
cannot set; the address is rendered on the control plane, so it may use only `host`,
`port` and variables. The `content` of an install step's `write` is written as it is (scripts have
`${...}` of their own); config files are rendered.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from domain.errors import DomainError
from domain.text import text_problem

KINDS = ("game", "dev")
Value = str | int | bool

#: Built-ins the node agent knows: where things are on the node, and which address to bind.
NODE_BUILTINS = frozenset({"host", "bind", "files", "home", "runtime", "cache", "downloads", "system_python"})
#: Built-ins of the instance, given by the platform.
INSTANCE_BUILTINS = frozenset({"port", "instance_id"})
BUILTINS = NODE_BUILTINS | INSTANCE_BUILTINS
#: What install steps may use besides variables customers cannot set (they run once per node).
INSTALL_BUILTINS = frozenset({"cache", "downloads", "system_python"})
#: What the address may use besides variables (it is rendered on the control plane).
ADDRESS_BUILTINS = frozenset({"host", "port"})
DEFAULT_ADDRESS = {"game": "${host}:${port}", "dev": "http://${host}:${port}/"}

VARIABLE_TYPES = ("string", "int", "bool", "memory")
READY_CHECKS = ("minecraft", "http", "console")
FILE_WHEN = ("missing", "always")
GENERATORS = ("token",)
#: Length of a generated token (`secrets.token_urlsafe(24)`): 32 characters of A-Z a-z 0-9 - _.
TOKEN_LENGTH = 32

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TEMPLATE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PLACEHOLDER = re.compile(r"\$(?:(\$)\{|\{([^{}]*)\})")
_MEMORY = re.compile(r"^\s*(\d+)\s*([MG])?i?B?\s*$", re.IGNORECASE)
_FILTERS = ("json",)


class UnknownTemplateError(DomainError):
    """No template of that name is offered for that kind of instance."""

    code = "unknown_template"


class TemplateUnavailableError(DomainError):
    """The template needs configuration only the operator can give (a variable without a value)."""

    code = "template_unavailable"


class TemplateError(DomainError):
    """A template definition is not valid; the message names the template and the key."""

    code = "invalid_template"


class VariableError(DomainError):
    """A variable a customer gave (or left out) is not valid for the template; names the variable."""

    code = "validation_error"

    def __init__(self, name: str, message: str) -> None:
        self.field = f"variables.{name}" if name else "variables"
        super().__init__(f"{self.field}: {message}")
        self.variable = name


# -- placeholders ---------------------------------------------------------------------------------


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """The `(name, filter)` pairs `text` refers to, in order (escapes left out)."""
    found = []
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1):
            continue
        name, _, flt = match.group(2).partition("|")
        found.append((name.strip(), flt.strip() or None))
    return found


def format_value(value: Value, flt: str | None = None) -> str:
    """How a value reads in rendered text: as itself (`true`/`false` for booleans), or as JSON."""
    if flt == "json":
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(text: str, values: Mapping[str, Value]) -> str:
    """`text` with every placeholder filled from `values` in one pass; `TemplateError` for a missing name."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1):
            return "${"
        name, _, flt = match.group(2).partition("|")
        name, flt = name.strip(), flt.strip() or None
        if name not in values:
            raise TemplateError(f"nothing to fill ${{{name}}} with")
        return format_value(values[name], flt)

    return _PLACEHOLDER.sub(fill, text)


def _render_tree(obj: Any, values: Mapping[str, Value]) -> Any:
    if isinstance(obj, str):
        return render(obj, values)
    if isinstance(obj, list | tuple):
        return [_render_tree(o, values) for o in obj]
    if isinstance(obj, Mapping):
        return {k: _render_tree(v, values) for k, v in obj.items()}
    return obj


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list | tuple):
        for o in obj:
            yield from _strings(o)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _strings(v)


# -- variables ------------------------------------------------------------------------------------


def parse_memory(value: object) -> int | None:
    """Megabytes from `512`, `"512M"`, `"2G"` (or `MiB`/`GiB`); None if it is not a memory size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            return int(match.group(1)) * (1024 if (match.group(2) or "M").upper() == "G" else 1)
    return None


@dataclass(frozen=True)
class Variable:
    """One variable of a template: its type, default and constraints, and who sets it."""

    name: str
    type: str
    description: str = ""
    default: Value | None = None
    #: False: only the operator sets it (in an `extends` file); customers cannot.
    settable: bool = True
    #: Never listed with its value (tokens, passwords).
    secret: bool = False
    #: `token`: the platform makes a random value per instance when none is given.
    generate: str | None = None
    min: int | None = None
    max: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is None and self.generate is None

    def check(self, value: object) -> Value:
        """The value, normalized (memory in MB); `VariableError` naming this variable if it does not fit."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise VariableError(self.name, "must be true or false")
            return value
        if self.type in ("int", "memory"):
            number = parse_memory(value) if self.type == "memory" else value
            if isinstance(number, bool) or not isinstance(number, int):
                what = "a whole number of megabytes (512, \"512M\" or \"2G\")" if self.type == "memory" else \
                    "a whole number"
                raise VariableError(self.name, f"must be {what}")
            unit = " MB" if self.type == "memory" else ""
            if self.min is not None and number < self.min:
                raise VariableError(self.name, f"must be at least {self.min}{unit}")
            if self.max is not None and number > self.max:
                raise VariableError(self.name, f"must be at most {self.max}{unit}")
            return number
        if not isinstance(value, str):
            raise VariableError(self.name, "must be a string")
        problem = text_problem(value)
        if problem is not None or "\n" in value or "\r" in value or "\t" in value:
            raise VariableError(self.name, problem or "must be a single line (no tab, LF or CR)")
        if self.min_length is not None and len(value) < self.min_length:
            raise VariableError(self.name, f"must be at least {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise VariableError(self.name, f"must be at most {self.max_length} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise VariableError(self.name, f"must match {self.pattern}")
        if self.choices is not None and value not in self.choices:
            raise VariableError(self.name, f"must be one of {', '.join(self.choices)}")
        return value

    def public(self) -> dict[str, Any]:
        """What `GET /api/templates` shows of it: never a secret's default."""
        constraints = {k: getattr(self, k) for k in ("min", "max", "min_length", "max_length", "pattern")
                       if getattr(self, k) is not None}
        if self.choices is not None:
            constraints["choices"] = list(self.choices)
        return {
            "name": self.name, "description": self.description, "type": self.type,
            "default": None if self.secret else self.default, "required": self.required,
            "generated": self.generate is not None, "secret": self.secret, "constraints": constraints,
        }


# -- the template ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallStep:
    """One install step, exactly one of: `run` (argv), `write` (a file), `download`, `packages` (Debian)."""

    run: tuple[str, ...] | None = None
    write: str | None = None
    download: str | None = None
    packages: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "${cache}"
    timeout: float = 900.0
    content: str = ""
    executable: bool = False
    sha256: str = ""
    to: str = ""

    @property
    def action(self) -> str:
        return "run" if self.run is not None else "write" if self.write is not None else \
            "download" if self.download is not None else "packages"


@dataclass(frozen=True)
class Start:
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "${files}"


@dataclass(frozen=True)
class Stop:
    """`command` is sent to the console first ('' = none); then SIGTERM, then SIGKILL, `timeout` s apart."""

    command: str = ""
    timeout: float = 10.0


@dataclass(frozen=True)
class Ready:
    check: str
    path: str = "/"
    pattern: str = ""
    timeout: float = 60.0


@dataclass(frozen=True)
class ConfigFile:
    """A file under the instance's files, rendered from variables: when `missing`, or `always` (every start)."""

    path: str
    content: str
    when: str = "missing"


@dataclass(frozen=True)
class Resources:
    memory_mb: int
    cpus: float
    disk_mb: int

    def as_dict(self) -> dict[str, Any]:
        return {"memory_mb": self.memory_mb, "cpus": self.cpus, "disk_mb": self.disk_mb}


@dataclass(frozen=True)
class Template:
    """A parsed, checked template. `source` is the definition it was made from (`from_dict(source)` again)."""

    name: str
    kind: str
    description: str
    variables: tuple[Variable, ...]
    install: tuple[InstallStep, ...]
    start: Start
    stop: Stop
    ready: Ready
    files: tuple[ConfigFile, ...]
    resources: Resources
    address: str
    source: Mapping[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Template:
        """Check a definition (a TOML document's table); `TemplateError` naming the template and key."""
        return _Parser(name, data).template()

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    @property
    def unconfigured(self) -> list[str]:
        """Variables only the operator may set that have no value: the template cannot be used until set."""
        return [v.name for v in self.variables if not v.settable and v.required]

    def public(self) -> dict[str, Any]:
        """What `GET /api/templates` lists: name, kind, description, the variables customers set, resources."""
        return {
            "name": self.name, "kind": self.kind, "description": self.description,
            "variables": [v.public() for v in self.variables if v.settable],
            "resources": self.resources.as_dict(), "available": not self.unconfigured,
        }

    # Rendering (the node agent and the control plane): values are the resolved variables plus built-ins.

    def install_key(self, variables: Mapping[str, Value], system_python: str) -> str:
        """What identifies this template's install on a node: the steps and every value they use."""
        steps = [{k: v for k, v in step.items() if k != "content"} for step in self.source.get("install", [])]
        used = sorted({n for s in _strings(steps) for n, _ in placeholders(s)})
        values = {n: (system_python if n == "system_python" else variables.get(n)) for n in used
                  if n not in ("cache", "downloads")}
        blob = json.dumps({"template": self.name, "install": self.source.get("install", []), "values": values},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def render_install(self, values: Mapping[str, Value]) -> list[InstallStep]:
        return [_rendered_step(step, values) for step in self.install]

    def render_start(self, values: Mapping[str, Value]) -> Start:
        return Start(tuple(render(a, values) for a in self.start.command),
                     {k: render(v, values) for k, v in self.start.env.items()}, render(self.start.cwd, values))

    def render_stop(self, values: Mapping[str, Value]) -> Stop:
        return Stop(render(self.stop.command, values), self.stop.timeout)

    def render_ready(self, values: Mapping[str, Value]) -> Ready:
        return Ready(self.ready.check, render(self.ready.path, values), render(self.ready.pattern, values),
                     self.ready.timeout)

    def render_files(self, values: Mapping[str, Value]) -> list[ConfigFile]:
        return [ConfigFile(render(f.path, values), render(f.content, values), f.when) for f in self.files]

    def render_address(self, host: str, port: int, variables: Mapping[str, Value]) -> str:
        return render(self.address, {**variables, "host": host, "port": port})


def _rendered_step(step: InstallStep, values: Mapping[str, Value]) -> InstallStep:
    r = lambda s: render(s, values)  # noqa: E731
    return InstallStep(
        run=tuple(r(a) for a in step.run) if step.run is not None else None,
        write=r(step.write) if step.write is not None else None,
        download=r(step.download) if step.download is not None else None,
        packages=step.packages, env={k: r(v) for k, v in step.env.items()}, cwd=r(step.cwd),
        timeout=step.timeout, content=step.content, executable=step.executable,
        sha256=r(step.sha256).lower(), to=r(step.to),
    )


def parse_template(name: str, text: str) -> Template:
    """A template from its TOML text; `TemplateError` for bad TOML or a bad definition."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"template {name}: not valid TOML: {exc}") from None
    return Template.from_dict(name, data)


def validate_variables(
    template: Template, given: Mapping[str, Any] | None, generated: Mapping[str, str] | None = None
) -> dict[str, Value]:
    """Every variable of `template` resolved: what the customer gave (checked), else the default, else a
    generated value from `generated`. `VariableError` names the first variable that is unknown, not
    settable by customers, of the wrong type, outside its constraints, or required and missing;
    `TemplateUnavailableError` if the operator has not configured the template."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise VariableError("", "must be an object of variable names to values")
    names = {v.name for v in template.variables if v.settable}
    for name in given:
        variable = template.variable(name)
        if variable is None or not variable.settable:
            offered = ", ".join(sorted(names)) or "none"
            why = "is set by the operator, not by customers" if variable else \
                f"is not a variable of template {template.name} (it has: {offered})"
            raise VariableError(str(name)[:64], why)
    if template.unconfigured:
        raise TemplateUnavailableError(
            f"template {template.name} is not configured yet: the operator has to set "
            f"{', '.join(template.unconfigured)}")
    resolved: dict[str, Value] = {}
    for variable in template.variables:
        if variable.name in given:
            resolved[variable.name] = variable.check(given[variable.name])
        elif variable.default is not None:
            resolved[variable.name] = variable.default
        elif variable.generate is not None and generated and variable.name in generated:
            resolved[variable.name] = variable.check(generated[variable.name])
        else:
            raise VariableError(variable.name, "is required")
    return dict(sorted(resolved.items()))


# -- checking a definition ------------------------------------------------------------------------


class _Parser:
    """Checks one definition; every error names the template and the key."""

    TOP = {"name", "kind", "description", "address", "resources", "variables", "install", "start", "stop",
           "ready", "files"}

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self.name = name
        self.data = data

    def fail(self, where: str, message: str) -> TemplateError:
        return TemplateError(f"template {self.name}: {where}: {message}")

    def table(self, value: object, where: str, keys: set[str], required: set[str] | None = None) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be a table")
        unknown = set(value) - keys
        if unknown:
            raise self.fail(where, f"unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(keys))})")
        missing = (required or set()) - set(value)
        if missing:
            raise self.fail(where, f"missing key {sorted(missing)[0]!r}")
        return value

    def string(self, value: object, where: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(where, "must be a non-empty string" if not empty else "must be a string")
        return value

    def number(self, value: object, where: str, *, integer: bool = False, positive: bool = True) -> Any:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if not ok or isinstance(value, bool) or (positive and value <= 0):
            raise self.fail(where, f"must be a positive {'whole ' if integer else ''}number")
        return value

    def strings(self, value: object, where: str, *, empty: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (not empty and not value):
            raise self.fail(where, "must be a non-empty list of strings" if not empty else "must be a list of strings")
        return tuple(value)

    def env(self, value: object, where: str) -> dict[str, str]:
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise self.fail(where, "must be a table of strings")
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise self.fail(f"{where}.{key}", "is not an environment variable name")
        return dict(value)

    def relative(self, value: object, where: str) -> str:
        path = self.string(value, where, empty=False)
        if path.startswith("/") or ".." in path.split("/"):
            raise self.fail(where, "must be a relative path without '..'")
        return path

    def template(self) -> Template:
        if not _TEMPLATE_NAME.match(self.name):
            raise self.fail("name", "must be 1-63 of a-z0-9-, starting with a letter")
        data = self.table(self.data, "the document", self.TOP, {"kind", "description", "resources", "start",
                                                               "ready"})
        if "name" in data and data["name"] != self.name:
            raise self.fail("name", f"says {data['name']!r}, but the file is named {self.name!r}")
        kind = data["kind"]
        if kind not in KINDS:
            raise self.fail("kind", f"must be one of {', '.join(KINDS)}")
        description = self.string(data["description"], "description", empty=False)
        declared = data.get("variables", {})
        if not isinstance(declared, Mapping):
            raise self.fail("variables", "must be a table of [variables.NAME] tables")
        variables = tuple(self.variable(n, v) for n, v in declared.items())
        install = tuple(self.step(i, s) for i, s in enumerate(self.list_of_tables(data.get("install", []),
                                                                                   "install")))
        start = self.start(data["start"])
        stop = self.stop(data.get("stop", {}))
        ready = self.ready(data["ready"])
        files = tuple(self.file(i, f) for i, f in enumerate(self.list_of_tables(data.get("files", []), "files")))
        resources = self.resources(data["resources"])
        address = self.string(data.get("address", DEFAULT_ADDRESS[kind]), "address", empty=False)
        template = Template(self.name, kind, description, variables, install, start, stop, ready, files,
                            resources, address, source=_plain(data))
        self.check_placeholders(template)
        return template

    def list_of_tables(self, value: object, where: str) -> list[Mapping]:
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.fail(where, "must be an array of tables ([[" + where + "]])")
        return value

    def variable(self, name: str, spec: object) -> Variable:
        where = f"variables.{name}"
        if not _NAME.match(name):
            raise self.fail(where, "a variable name is 1-32 of a-z0-9_, starting with a letter")
        if name in BUILTINS:
            raise self.fail(where, f"{name!r} is given by the platform ({', '.join(sorted(BUILTINS))})")
        keys = {"type", "description", "default", "settable", "secret", "generate", "min", "max", "min_length",
                "max_length", "pattern", "choices"}
        spec = self.table(spec, where, keys, {"type"})
        vtype = spec["type"]
        if vtype not in VARIABLE_TYPES:
            raise self.fail(f"{where}.type", f"must be one of {', '.join(VARIABLE_TYPES)}")
        numeric, text = {"min", "max"}, {"min_length", "max_length", "pattern", "choices", "generate"}
        wrong = (set(spec) & text) if vtype in ("int", "memory") else (set(spec) & (numeric | text)) \
            if vtype == "bool" else set(spec) & numeric
        if wrong:
            raise self.fail(f"{where}.{sorted(wrong)[0]}", f"does not apply to a {vtype} variable")
        for key in ("min", "max", "min_length", "max_length"):
            if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool) or spec[key] < 0):
                raise self.fail(f"{where}.{key}", "must be a whole number, 0 or more")
        for key in ("settable", "secret"):
            if key in spec and not isinstance(spec[key], bool):
                raise self.fail(f"{where}.{key}", "must be true or false")
        if "pattern" in spec:
            try:
                re.compile(self.string(spec["pattern"], f"{where}.pattern", empty=False))
            except re.error as exc:
                raise self.fail(f"{where}.pattern", f"is not a regular expression: {exc}") from None
        choices = None
        if "choices" in spec:
            choices = self.strings(spec["choices"], f"{where}.choices")
        generate = spec.get("generate")
        if generate is not None and generate not in GENERATORS:
            raise self.fail(f"{where}.generate", f"must be one of {', '.join(GENERATORS)}")
        variable = Variable(
            name=name, type=vtype, description=self.string(spec.get("description", ""), f"{where}.description"),
            settable=spec.get("settable", True), secret=spec.get("secret", False), generate=generate,
            min=spec.get("min"), max=spec.get("max"), min_length=spec.get("min_length"),
            max_length=spec.get("max_length"), pattern=spec.get("pattern"), choices=choices,
        )
        if generate is not None and "default" in spec:
            raise self.fail(f"{where}.default", "a generated variable has no default")
        if generate is not None:
            try:
                variable.check("A" * TOKEN_LENGTH)
            except VariableError as exc:
                raise self.fail(where, f"a generated token ({TOKEN_LENGTH} characters of A-Z a-z 0-9 - _) would "
                                f"not fit its constraints: {exc.message}") from None
        if "default" in spec:
            try:
                default = variable.check(spec["default"])
            except VariableError as exc:
                raise self.fail(f"{where}.default", exc.message.split(": ", 1)[-1]) from None
            variable = replace(variable, default=default)
        return variable

    def step(self, index: int, spec: Mapping) -> InstallStep:
        where = f"install[{index}]"
        actions = [a for a in ("run", "write", "download", "packages") if a in spec]
        if len(actions) != 1:
            raise self.fail(where, "needs exactly one of run, write, download, packages")
        action = actions[0]
        allowed = {"run": {"run", "env", "cwd", "timeout"}, "write": {"write", "content", "executable"},
                   "download": {"download", "sha256", "to", "timeout"}, "packages": {"packages"}}[action]
        required = {"write": {"content"}, "download": {"sha256", "to"}}.get(action, set())
        self.table(spec, where, allowed, required)
        timeout = float(self.number(spec.get("timeout", 900), f"{where}.timeout"))
        if action == "run":
            return InstallStep(run=self.strings(spec["run"], f"{where}.run"), env=self.env(spec.get("env", {}),
                               f"{where}.env"), cwd=self.string(spec.get("cwd", "${cache}"), f"{where}.cwd",
                                                                 empty=False), timeout=timeout)
        if action == "write":
            executable = spec.get("executable", False)
            if not isinstance(executable, bool):
                raise self.fail(f"{where}.executable", "must be true or false")
            return InstallStep(write=self.relative(spec["write"], f"{where}.write"),
                               content=self.string(spec["content"], f"{where}.content"), executable=executable)
        if action == "download":
            url = self.string(spec["download"], f"{where}.download")
            sha = self.string(spec["sha256"], f"{where}.sha256")
            if not placeholders(sha) and not _SHA256.match(sha.lower()):
                raise self.fail(f"{where}.sha256", "must be 64 hexadecimal digits")
            if not placeholders(url) and not re.match(r"^(https?|file)://", url):
                raise self.fail(f"{where}.download", "must be an http://, https:// or file:// URL")
            return InstallStep(download=url, sha256=sha, to=self.relative(spec["to"], f"{where}.to"),
                               timeout=timeout)
        packages = self.strings(spec["packages"], f"{where}.packages")
        for package in packages:
            if not _PACKAGE.match(package):
                raise self.fail(f"{where}.packages", f"{package!r} is not a Debian package name")
        return InstallStep(packages=packages)

    def start(self, spec: object) -> Start:
        spec = self.table(spec, "start", {"command", "env", "cwd"}, {"command"})
        return Start(self.strings(spec["command"], "start.command"), self.env(spec.get("env", {}), "start.env"),
                     self.string(spec.get("cwd", "${files}"), "start.cwd", empty=False))

    def stop(self, spec: object) -> Stop:
        spec = self.table(spec, "stop", {"command", "timeout"})
        command = self.string(spec.get("command", ""), "stop.command")
        if "\n" in command or "\r" in command:
            raise self.fail("stop.command", "must be a single line")
        return Stop(command, float(self.number(spec.get("timeout", 10), "stop.timeout")))

    def ready(self, spec: object) -> Ready:
        spec = self.table(spec, "ready", {"check", "path", "pattern", "timeout"}, {"check"})
        check = spec["check"]
        if check not in READY_CHECKS:
            raise self.fail("ready.check", f"must be one of {', '.join(READY_CHECKS)}")
        if check == "console":
            pattern = self.string(spec.get("pattern"), "ready.pattern", empty=False)
            if not placeholders(pattern):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise self.fail("ready.pattern", f"is not a regular expression: {exc}") from None
        elif "pattern" in spec:
            raise self.fail("ready.pattern", f"does not apply to the {check} check")
        if check != "http" and "path" in spec:
            raise self.fail("ready.path", f"does not apply to the {check} check")
        path = self.string(spec.get("path", "/"), "ready.path", empty=False)
        if not path.startswith("/"):
            raise self.fail("ready.path", "must start with /")
        return Ready(check, path, spec.get("pattern", ""), float(self.number(spec.get("timeout", 60),
                                                                              "ready.timeout")))

    def file(self, index: int, spec: Mapping) -> ConfigFile:
        where = f"files[{index}]"
        self.table(spec, where, {"path", "content", "when"}, {"path", "content"})
        when = spec.get("when", "missing")
        if when not in FILE_WHEN:
            raise self.fail(f"{where}.when", f"must be one of {', '.join(FILE_WHEN)}")
        return ConfigFile(self.relative(spec["path"], f"{where}.path"), self.string(spec["content"],
                                                                                     f"{where}.content"), when)

    def resources(self, spec: object) -> Resources:
        spec = self.table(spec, "resources", {"memory_mb", "cpus", "disk_mb"}, {"memory_mb", "cpus", "disk_mb"})
        return Resources(self.number(spec["memory_mb"], "resources.memory_mb", integer=True),
                         float(self.number(spec["cpus"], "resources.cpus")),
                         self.number(spec["disk_mb"], "resources.disk_mb", integer=True))

    def check_placeholders(self, t: Template) -> None:
        """Every placeholder names something its section may use, with a known filter."""
        variables = {v.name for v in t.variables}
        operator = {v.name for v in t.variables if not v.settable}
        install = [{k: v for k, v in step.items() if k != "content"} for step in self.data.get("install", [])]
        sections: list[tuple[str, Any, frozenset[str] | set[str]]] = [
            ("install", install, INSTALL_BUILTINS | operator),
            ("address", t.address, ADDRESS_BUILTINS | variables),
        ]
        for key in ("start", "stop", "ready", "files"):
            sections.append((key, self.data.get(key, {}), BUILTINS | variables))
        for where, section, allowed in sections:
            for text in _strings(section):
                for name, flt in placeholders(text):
                    if flt is not None and flt not in _FILTERS:
                        raise self.fail(where, f"${{{name}|{flt}}}: unknown filter (known: {', '.join(_FILTERS)})")
                    if name not in allowed:
                        why = "install steps run once per node: they may use only " + \
                            ", ".join(sorted(INSTALL_BUILTINS)) + " and variables customers cannot set" \
                            if where == "install" else "the address may use only host, port and variables" \
                            if where == "address" else "no such variable or built-in"
                        raise self.fail(where, f"${{{name}}}: {why}")


def _plain(obj: Any) -> Any:
    """A JSON-compatible deep copy (TOML gives only tables, arrays, strings, numbers and booleans here)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
