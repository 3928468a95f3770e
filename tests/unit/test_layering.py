"""The dependency direction api -> services -> projections -> domain, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "domain": {"projections", "services", "api", "tests", "psycopg", "sqlite3", "redis", "fastapi", "httpx",
               "os", "subprocess", "socket", "time"},
    "projections": {"services", "api", "tests"},
    "services": {"api", "tests"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_layers_import_only_inwards() -> None:
    offences = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (ROOT / layer).rglob("*.py"):
            bad = imported_roots(path) & forbidden
            if bad:
                offences.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offences == []


def test_domain_reads_no_clock_or_environment() -> None:
    for path in (ROOT / "domain").rglob("*.py"):
        text = path.read_text()
        for needle in ("datetime.now", "time.time(", "os.environ", "uuid4("):
            assert needle not in text, f"{path.name} uses {needle}"


def test_every_aggregate_topic_resolves_in_a_fresh_process() -> None:
    """A process that only imports the store can decode every event type (explicit topics registered)."""
    import subprocess
    import sys

    code = (
        "import services.store\n"
        "from eventsourcing.utils import resolve_topic\n"
        "from domain.catalog import AGGREGATES\n"
        "topics = [c.TOPIC for a in AGGREGATES for c in vars(a).values()\n"
        "          if isinstance(c, type) and hasattr(c, 'TOPIC')]\n"
        "assert len(topics) > 10\n"
        "[resolve_topic(t) for t in topics]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
