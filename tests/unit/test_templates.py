"""Templates as data: parsing and checking a definition, resolving variables, rendering, the catalogue.

Pure: no process runs here. The shipped templates are checked for what they render (the Paper
command line and config, JupyterLab's address and readiness, code-server's config), never run.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.templates import (
    Template,
    TemplateError,
    TemplateUnavailableError,
    UnknownTemplateError,
    VariableError,
    parse_template,
    placeholders,
    render,
    validate_variables,
)
from services.infrastructure.templates import TemplateCatalogue, shipped_catalogue

NODE = {"host": "play.example", "bind": "0.0.0.0", "files": "/srv/i/files", "home": "/srv/r/home",
        "runtime": "/srv/r", "cache": "/cache/t", "downloads": "/cache/d", "system_python": "/usr/bin/python3",
        "instance_id": "iid"}

MINIMAL = """
kind = "game"
description = "a test template"

[resources]
memory_mb = 256
cpus = 0.5
disk_mb = 100

[variables.motd]
type = "string"
default = "hi"
max_length = 10

[variables.slots]
type = "int"
default = 4
min = 1
max = 8

[variables.pvp]
type = "bool"
default = true

[variables.heap]
type = "memory"
default = "1G"
min = 256

[start]
command = ["server", "--port", "${port}", "--heap", "${heap}M"]

[ready]
check = "minecraft"

[[files]]
path = "config.json"
content = '{"motd": ${motd|json}, "slots": ${slots}, "pvp": ${pvp}}'
"""


def minimal(**changes: Any) -> dict[str, Any]:
    import tomllib

    data = tomllib.loads(MINIMAL)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


# -- parsing ------------------------------------------------------------------------------------------


def test_a_template_parses_with_its_defaults() -> None:
    t = parse_template("tiny", MINIMAL)
    assert (t.name, t.kind, t.address) == ("tiny", "game", "${host}:${port}")
    assert [v.name for v in t.variables] == ["motd", "slots", "pvp", "heap"]
    assert t.variable("heap").default == 1024  # type: ignore[union-attr]  # "1G" in MB
    assert (t.stop.command, t.stop.timeout, t.ready.timeout) == ("", 10.0, 60.0)
    assert t.files[0].when == "missing"
    assert Template.from_dict("tiny", t.source) == t  # the source round-trips (the agent gets it as JSON)
    assert json.loads(json.dumps(t.source)) == t.source


@pytest.mark.parametrize(("change", "message"), [
    ({"kind": "vm"}, "kind: must be one of game, dev"),
    ({"description": None}, "missing key 'description'"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"resources": {"memory_mb": 0, "cpus": 1, "disk_mb": 1}}, "resources.memory_mb: must be a positive"),
    ({"start": {"command": []}}, "start.command: must be a non-empty list"),
    ({"start": {"command": ["x", "${nope}"]}}, "start: ${nope}: no such variable or built-in"),
    ({"start": {"command": ["x", "${motd|yaml}"]}}, "unknown filter"),
    ({"ready": {"check": "telnet"}}, "ready.check: must be one of minecraft, http, console"),
    ({"ready": {"check": "console"}}, "ready.pattern: must be a non-empty string"),
    ({"ready": {"check": "console", "pattern": "("}}, "ready.pattern: is not a regular expression"),
    ({"ready": {"check": "minecraft", "path": "/x"}}, "ready.path: does not apply"),
    ({"files": [{"path": "../escape", "content": ""}]}, "files[0].path: must be a relative path"),
    ({"files": [{"path": "a", "content": "", "when": "sometimes"}]}, "files[0].when: must be one of"),
    ({"install": [{"run": ["npm", "i"], "write": "x"}]}, "install[0]: needs exactly one of"),
    ({"install": [{"run": ["echo", "${motd}"]}]}, "install steps run once per node"),
    ({"install": [{"run": ["echo", "${port}"]}]}, "install steps run once per node"),
    ({"install": [{"download": "ftp://x", "sha256": "0" * 64, "to": "x"}]}, "must be an http://"),
    ({"install": [{"download": "https://x", "sha256": "abc", "to": "x"}]}, "64 hexadecimal digits"),
    ({"install": [{"packages": ["Not A Package"]}]}, "is not a Debian package name"),
    ({"address": "${host}:${port}/${files}"}, "the address may use only host, port and variables"),
    ({"variables": {"port": {"type": "int"}}}, "'port' is given by the platform"),
    ({"variables": {"Bad": {"type": "int"}}}, "a variable name is 1-32 of a-z0-9_"),
    ({"variables": {"x": {"type": "float"}}}, "variables.x.type: must be one of"),
    ({"variables": {"x": {"type": "int", "max_length": 3}}}, "variables.x.max_length: does not apply"),
    ({"variables": {"x": {"type": "string", "default": "toolong", "max_length": 3}}},
     "variables.x.default: must be at most 3 characters"),
    ({"variables": {"x": {"type": "string", "generate": "token", "max_length": 8}}}, "would not fit"),
    ({"variables": {"x": {"type": "string", "pattern": "["}}}, "is not a regular expression"),
])
def test_bad_definitions_name_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.from_dict("tiny", minimal(**change))
    assert info.value.code == "invalid_template"
    assert info.value.message.startswith("template tiny: ")
    assert message in info.value.message


def test_bad_toml_and_bad_names() -> None:
    with pytest.raises(TemplateError, match="not valid TOML"):
        parse_template("tiny", "kind = ")
    with pytest.raises(TemplateError, match="name: must be 1-63"):
        parse_template("Tiny_1", MINIMAL)
    with pytest.raises(TemplateError, match="the file is named 'tiny'"):
        Template.from_dict("tiny", minimal(name="other"))


def test_a_written_file_is_verbatim_and_install_may_use_operator_variables() -> None:
    data = minimal(install=[{"write": "launcher.js", "content": "console.log(`${port}`)"},
                            {"download": "${url}", "sha256": "${sum}", "to": "a.jar"}])
    data["variables"]["url"] = {"type": "string", "settable": False, "default": "https://example/a.jar"}
    data["variables"]["sum"] = {"type": "string", "settable": False, "default": "a" * 64}
    t = Template.from_dict("tiny", data)
    steps = t.render_install({"url": "https://example/a.jar", "sum": "A" * 64, **NODE})
    assert steps[0].content == "console.log(`${port}`)"  # scripts keep their own ${...}
    assert (steps[1].download, steps[1].sha256) == ("https://example/a.jar", "a" * 64)


# -- variables ----------------------------------------------------------------------------------------


def test_validate_fills_defaults_and_checks_types() -> None:
    t = parse_template("tiny", MINIMAL)
    assert validate_variables(t, None) == {"heap": 1024, "motd": "hi", "pvp": True, "slots": 4}
    assert validate_variables(t, {"motd": "yo", "slots": 8, "pvp": False, "heap": "512M"}) == \
        {"heap": 512, "motd": "yo", "pvp": False, "slots": 8}


@pytest.mark.parametrize(("given", "variable", "message"), [
    ({"motd": "x" * 11}, "motd", "at most 10 characters"),
    ({"motd": 5}, "motd", "must be a string"),
    ({"motd": "two\nlines"}, "motd", "single line"),
    ({"motd": "nul\x00"}, "motd", "control character"),
    ({"slots": 9}, "slots", "at most 8"),
    ({"slots": 0}, "slots", "at least 1"),
    ({"slots": "4"}, "slots", "whole number"),
    ({"slots": True}, "slots", "whole number"),
    ({"slots": 2.5}, "slots", "whole number"),
    ({"pvp": "yes"}, "pvp", "true or false"),
    ({"heap": "lots"}, "heap", "megabytes"),
    ({"heap": 128}, "heap", "at least 256 MB"),
    ({"colour": "red"}, "colour", "is not a variable of template tiny (it has: heap, motd, pvp, slots)"),
])
def test_a_bad_variable_is_named(given: dict[str, Any], variable: str, message: str) -> None:
    with pytest.raises(VariableError) as info:
        validate_variables(parse_template("tiny", MINIMAL), given)
    assert info.value.code == "validation_error"
    assert info.value.variable == variable and info.value.field == f"variables.{variable}"
    assert info.value.message.startswith(f"variables.{variable}: ") and message in info.value.message


def test_operator_variables_and_generated_tokens() -> None:
    data = minimal()
    data["variables"]["token"] = {"type": "string", "secret": True, "generate": "token", "min_length": 16}
    data["variables"]["jar"] = {"type": "string", "settable": False}
    t = Template.from_dict("tiny", data)
    assert t.unconfigured == ["jar"] and t.public()["available"] is False
    with pytest.raises(VariableError, match=r"variables\.jar: is set by the operator"):
        validate_variables(t, {"jar": "mine"})
    with pytest.raises(TemplateUnavailableError, match="the operator has to set jar"):
        validate_variables(t, {})
    data["variables"]["jar"]["default"] = "https://example/x.jar"
    t = Template.from_dict("tiny", data)
    resolved = validate_variables(t, {}, {"token": "T" * 32})
    assert resolved["token"] == "T" * 32 and resolved["jar"] == "https://example/x.jar"
    assert validate_variables(t, {"token": "chosen-by-customer"}, {"token": "T" * 32})["token"] == \
        "chosen-by-customer"
    with pytest.raises(VariableError, match=r"variables\.token: must be at least 16"):
        validate_variables(t, {"token": "short"})
    listed = {v["name"]: v for v in t.public()["variables"]}
    assert "jar" not in listed  # customers do not see what only the operator sets
    assert listed["token"] == {"name": "token", "description": "", "type": "string", "default": None,
                               "required": False, "generated": True, "secret": True,
                               "constraints": {"min_length": 16}}


@given(st.text(max_size=40))
def test_rendering_is_one_pass(value: str) -> None:
    """A value is never read for placeholders again, whatever it holds."""
    assert render("<${v}>", {"v": value, "port": 1}) == f"<{value}>"
    assert json.loads(render("${v|json}", {"v": value})) == value


def test_placeholders_and_escapes() -> None:
    assert placeholders("a ${x} $${y} ${z|json}") == [("x", None), ("z", "json")]
    assert render("$${literal} ${n}", {"n": 3}) == "${literal} 3"
    assert render("${b}", {"b": False}) == "false"
    with pytest.raises(TemplateError, match=r"nothing to fill \$\{gone\}"):
        render("${gone}", {})


# -- the shipped templates ----------------------------------------------------------------------------


def test_the_shipped_catalogue() -> None:
    catalogue = shipped_catalogue()
    assert [(t.kind, t.name) for t in catalogue.all()] == [("game", "minecraft"), ("game", "paper"),
                                                          ("dev", "node"), ("dev", "python")]
    with pytest.raises(UnknownTemplateError, match="not offered for game instances"):
        catalogue.get("game", "python")
    with pytest.raises(UnknownTemplateError):
        catalogue.get("dev", "nope")
    for template in catalogue.all():
        public = template.public()
        assert set(public) == {"name", "kind", "description", "variables", "resources", "available"}
        assert public["resources"]["memory_mb"] > 0


def test_minecraft_renders_flying_squid_settings() -> None:
    catalogue = shipped_catalogue()
    t = catalogue.get("game", "minecraft")
    variables = catalogue.resolve("game", "minecraft", {"motd": 'Say "hi"', "max_players": 3, "online_mode": True})
    values = {**variables, **NODE, "port": 25565}
    settings = json.loads(t.render_files(values)[0].content)
    assert (settings["motd"], settings["max-players"], settings["online-mode"]) == ('Say "hi"', 3, True)
    start = t.render_start(values)
    assert start.command == ("node", "--max-old-space-size=512", "/cache/t/launcher.js")
    assert start.env["ZLH_PORT"] == "25565" and start.env["FLYING_SQUID_HOME"] == "/cache/t"
    assert start.cwd == "/srv/i/files"
    assert (t.stop.command, t.ready.check) == ("stop", "minecraft")
    npm = next(s for s in t.install if s.run and s.run[0] == "npm")
    assert "--save-exact" in npm.run  # type: ignore[operator]
    package = json.loads(next(s for s in t.install if s.write == "package.json").content)
    assert package["dependencies"] == {"flying-squid": "1.12.0"}  # pinned


def test_python_is_jupyterlab_with_a_token_in_its_address() -> None:
    catalogue = shipped_catalogue()
    t = catalogue.get("dev", "python")
    first = catalogue.resolve("dev", "python", None)
    second = catalogue.resolve("dev", "python", None)
    assert len(first["token"]) == 32 and first["token"] != second["token"]  # per instance
    assert t.render_address("node.example", 8888, first) == f"http://node.example:8888/lab?token={first['token']}"
    values = {**first, **NODE, "port": 8888}
    command = t.render_start(values).command
    assert f"--IdentityProvider.token={first['token']}" in command
    assert "--ServerApp.root_dir=/srv/i/files" in command and "--ServerApp.port_retries=0" in command
    assert t.render_ready(values).path == f"/api/status?token={first['token']}"
    assert "jupyterlab==4.6.6" in next(s.content for s in t.install if s.write == "requirements.txt").split()
    assert t.install[1].run[0] == "${system_python}"  # type: ignore[index]


def test_node_is_code_server_with_its_password_where_its_login_page_says() -> None:
    catalogue = shipped_catalogue()
    t = catalogue.get("dev", "node")
    variables = catalogue.resolve("dev", "node", None)
    values = {**variables, **NODE, "port": 8080}
    [config] = t.render_files(values)
    assert config.path == ".config/code-server/config.yaml"
    assert f"password: {variables['password']}" in config.content and "auth: password" in config.content
    command = t.render_start(values).command
    assert "code-server/out/node/entry.js" in command[1] and command[4:6] == ("--bind-addr", "0.0.0.0:8080")
    assert t.render_ready(values).path == "/healthz"
    assert next(s for s in t.install if s.packages).packages == ("build-essential", "python3", "pkg-config",
                                                                   "libkrb5-dev", "ripgrep")
    assert catalogue.resolve("dev", "node", {"auth": "none"})["auth"] == "none"
    with pytest.raises(VariableError, match=r"variables\.auth: must be one of password, none"):
        catalogue.resolve("dev", "node", {"auth": "token"})


def paper_catalogue(tmp_path: Path, url: str = "https://jars.example/paper-1.20.4.jar",
                    sha: str = "ab" * 32) -> TemplateCatalogue:
    (tmp_path / "paper.toml").write_text(
        f'extends = "paper"\n[variables.jar_url]\ndefault = "{url}"\n[variables.jar_sha256]\ndefault = "{sha}"\n')
    return TemplateCatalogue.load(tmp_path)


def test_paper_needs_the_operators_jar(tmp_path: Path) -> None:
    assert shipped_catalogue().get("game", "paper").unconfigured == ["jar_url", "jar_sha256"]
    with pytest.raises(TemplateUnavailableError, match="jar_url, jar_sha256"):
        shipped_catalogue().resolve("game", "paper", {})
    catalogue = paper_catalogue(tmp_path)
    assert catalogue.get("game", "paper").public()["available"] is True
    with pytest.raises(VariableError, match=r"variables\.jar_url: is set by the operator"):
        catalogue.resolve("game", "paper", {"jar_url": "https://evil.example/x.jar"})


def test_paper_renders_its_java_command_line_and_config(tmp_path: Path) -> None:
    catalogue = paper_catalogue(tmp_path)
    t = catalogue.get("game", "paper")
    variables = catalogue.resolve("game", "paper", {"memory": "2G", "max_players": 40, "online_mode": False,
                                                    "motd": "Paper!", "accept_eula": True})
    values = {**variables, **NODE, "port": 25570}
    assert t.render_start(values).command == (
        "java", "-Xms2048M", "-Xmx2048M", "-XX:+UseG1GC", "-jar", "/cache/t/paper.jar", "--nogui",
        "--port", "25570", "--host", "0.0.0.0", "--max-players", "40", "--online-mode", "false")
    files = {f.path: f for f in t.render_files(values)}
    assert files["eula.txt"].content == "eula=true\n" and files["eula.txt"].when == "always"
    properties = dict(line.split("=", 1) for line in files["server.properties"].content.splitlines())
    assert properties["server-port"] == "25570" and properties["motd"] == "Paper!"
    assert properties["max-players"] == "40" and properties["online-mode"] == "false"
    [java, download] = t.render_install({**values, "cache": "/cache/paper-x"})
    assert java.run == ("java", "-version")
    assert (download.download, download.sha256, download.to) == \
        ("https://jars.example/paper-1.20.4.jar", "ab" * 32, "paper.jar")
    assert (t.stop.command, t.ready.check) == ("stop", "minecraft")
    with pytest.raises(VariableError, match=r"variables\.motd: must match"):
        catalogue.resolve("game", "paper", {"motd": "back\\slash"})
    other = paper_catalogue(tmp_path, sha="cd" * 32)
    other_variables = other.resolve("game", "paper", {"memory": "2G"})
    assert other.get("game", "paper").install_key(other_variables, "p") != t.install_key(variables, "p")
    assert t.install_key({**variables, "memory": 512, "motd": "x"}, "p") == t.install_key(variables, "p")


# -- the operator's templates -------------------------------------------------------------------------


def test_operator_templates_add_extend_and_replace(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(MINIMAL)
    (tmp_path / "creative.toml").write_text(
        'extends = "minecraft"\ndescription = "Creative, 50 players"\n'
        '[variables.max_players]\ndefault = 50\n[resources]\nmemory_mb = 2048\n')
    catalogue = TemplateCatalogue.load(tmp_path)
    assert {t.name for t in catalogue.all()} == {"minecraft", "paper", "python", "node", "tiny", "creative"}
    creative = catalogue.get("game", "creative")
    assert creative.variable("max_players").default == 50  # type: ignore[union-attr]
    assert creative.variable("max_players").max == 100  # type: ignore[union-attr]  # merged, not replaced
    assert creative.resources.memory_mb == 2048 and creative.resources.disk_mb == 4096
    assert creative.install == catalogue.get("game", "minecraft").install
    (tmp_path / "python.toml").write_text(MINIMAL.replace('kind = "game"', 'kind = "dev"'))
    assert TemplateCatalogue.load(tmp_path).get("dev", "python").description == "a test template"


@pytest.mark.parametrize(("name", "text", "message"), [
    ("broken", "kind = ", "broken.toml: not valid TOML"),
    ("badkind", MINIMAL.replace('"game"', '"vm"'), "badkind.toml: template badkind: kind"),
    ("orphan", 'extends = "nope"\n', "extends = 'nope', which is not a shipped template"),
])
def test_a_bad_operator_template_stops_the_start_naming_the_file(tmp_path: Path, name: str, text: str,
                                                                   message: str) -> None:
    (tmp_path / f"{name}.toml").write_text(text)
    with pytest.raises(TemplateError) as info:
        TemplateCatalogue.load(tmp_path)
    assert message in info.value.message
    with pytest.raises(TemplateError, match="is not a directory"):
        TemplateCatalogue.load(tmp_path / "missing")


def test_a_spec_fills_defaults_a_template_gained_later() -> None:
    catalogue = shipped_catalogue()
    from uuid import uuid4

    spec = catalogue.spec(uuid4(), "game", "minecraft", "a-1", {"motd": "old"})
    assert spec.variables["motd"] == "old" and spec.variables["max_players"] == 20
    assert spec.definition is catalogue.find("minecraft")
    gone = catalogue.spec(uuid4(), "game", "retired", "b-1", {"x": 1})
    assert gone.definition is None and dict(gone.variables) == {"x": 1}
    mutated = copy.deepcopy(dict(spec.definition.source))  # type: ignore[union-attr]
    assert Template.from_dict("minecraft", mutated) == spec.definition
