"""Every systemd unit we ship is enabled by ops/README.md and restarted by the patch and rollback runbook.

A unit that exists but that no install step enables never runs in production (the controller, the repair
and billing workers were in that state once); one that the runbook forgets keeps running old code.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from services.bootstrap import WORKERS

OPS = Path(__file__).resolve().parents[2] / "ops"
SYSTEMD = OPS / "systemd"


def _commands(markdown: str, verb: str) -> list[str]:
    """The shell commands `systemctl VERB ...` in the markdown's code blocks, continuation lines joined."""
    blocks = re.findall(r"```sh\n(.*?)```", markdown, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0]
            if re.search(rf"\bsystemctl {verb}\b", line):
                commands.append(line)
    return commands


def _named(commands: list[str]) -> set[str]:
    return {word for command in commands for word in re.findall(r"\bzlh-[a-z]+(?:@[a-z]+)?\b", command)}


def _units() -> dict[str, bool]:
    """Every unit that must run, as systemctl names it (template units once per worker), and whether it is a oneshot."""
    units = {}
    for path in sorted(SYSTEMD.glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(path)
        oneshot = parser.get("Service", "Type", fallback="simple") == "oneshot"
        name = path.stem
        if name.endswith("@"):
            assert "zlh worker %i" in path.read_text(), path
            units.update({f"{name}{worker}": oneshot for worker in WORKERS})
        else:
            units[name] = oneshot
    return units


def test_the_units_are_the_ones_we_expect() -> None:
    units = _units()
    assert {"zlh-migrate", "zlh-api", "zlh-agent", "zlh-controller", "zlh-worker@repair",
            "zlh-worker@billing", "zlh-worker@provisioning"} <= set(units)
    assert units["zlh-migrate"] and not units["zlh-api"]


def test_ops_readme_enables_every_unit() -> None:
    enabled = _named(_commands((OPS / "README.md").read_text(), "enable"))
    missing = set(_units()) - enabled
    assert not missing, f"ops/README.md enables no {sorted(missing)}"


def test_the_patch_and_rollback_runbook_restarts_every_unit() -> None:
    runbook = (OPS / "runbooks" / "patch-and-rollback.md").read_text()
    patch, rollback = runbook.split("## Rolling back", 1)
    services = {name for name, oneshot in _units().items() if not oneshot}
    for section, text in (("patch", patch), ("rollback", rollback)):
        missing = services - _named(_commands(text, "restart"))
        assert not missing, f"the runbook's {section} section restarts no {sorted(missing)}"
    # The oneshot is run by hand, step by step (restarting it would restart everything at once).
    assert "zlhc migrate" in patch
    for name, oneshot in _units().items():
        if oneshot:
            assert name in runbook, name
