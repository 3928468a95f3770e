"""requirements.lock pins every dependency pyproject.toml names, each with its sha256 hashes.

`make` installs from the lock with `--require-hashes`; a dependency added to pyproject.toml but not locked
would make that install fail on a fresh machine, so this test says which one and how to fix it (`make lock`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, tuple[str, int]]:
    """Package -> (pinned version, number of hashes)."""
    text = (ROOT / "requirements.lock").read_text()
    locked = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s\\]+)", block)
        if head:
            locked[canonicalize_name(head.group(1))] = (head.group(2), block.count("--hash=sha256:"))
    return locked


def test_every_dependency_is_locked_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    locked = _locked()
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not in requirements.lock: run make lock"
        version, hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), \
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}: run make lock"
        assert hashes >= 1, f"{name} has no hash in requirements.lock"
