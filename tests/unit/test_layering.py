"""The architecture, checked on the source.

Dependency direction api -> services -> projections -> domain; inside services, use cases and
workers lean on infrastructure and ports, never the other way; the node agent deploys alone.
"""

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

#: Which part of the architecture each path under services/ belongs to (see docs/architecture.md).
SERVICE_PACKAGES = {"infrastructure", "workers", "adapters", "agent"}
#: Folders of package data under services/, with no Python in them: the shipped templates.
SERVICE_DATA = {"templates"}
#: The modules at the top of services/: wiring and ports beside the use cases.
SERVICE_WIRING = {"__init__", "bootstrap", "settings", "ports", "notification_ports", "problem_documents"}
#: What the node agent may import from this project: pure interfaces and stdlib-only helpers, and the template
#: format (domain.templates: pure, standard library only), which the control plane and the agent share.
AGENT_MAY_IMPORT = ("services.agent", "services.ports", "services.problem_documents", "services.infrastructure.files",
                    "domain.templates")
#: The domain modules the agent's process may load: the template format and what it imports.
AGENT_DOMAIN_MODULES = ("domain", "domain.templates", "domain.errors", "domain.text")


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def imported_roots(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imported_modules(path)}


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
        "import services.infrastructure.store\n"
        "from eventsourcing.utils import resolve_topic\n"
        "from domain.catalog import AGGREGATES\n"
        "topics = [c.TOPIC for a in AGGREGATES for c in vars(a).values()\n"
        "          if isinstance(c, type) and hasattr(c, 'TOPIC')]\n"
        "assert len(topics) > 10\n"
        "[resolve_topic(t) for t in topics]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_service_module_names_its_layer_by_its_path() -> None:
    """services/ holds use cases at its top, wiring and ports beside them, four named packages and data folders."""
    top = ROOT / "services"
    assert {p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("__")} == \
        SERVICE_PACKAGES | SERVICE_DATA
    for folder in SERVICE_DATA:
        assert not list((top / folder).rglob("*.py")), f"services/{folder} holds data only"
    for path in top.glob("*.py"):
        if path.stem in SERVICE_WIRING:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert doc.lower().startswith("use case"), f"{path.name}: a top-level service module is a use case"


def test_infrastructure_and_adapters_know_no_use_case_or_worker() -> None:
    offences = []
    for package in ("infrastructure", "adapters", "agent"):
        for path in (ROOT / "services" / package).rglob("*.py"):
            for module in imported_modules(path):
                if module.startswith("services.workers") or (
                    module.startswith("services.") and module.count(".") == 1
                    and module.split(".")[1] not in SERVICE_WIRING | SERVICE_PACKAGES
                ):
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offences == []


def test_the_node_agent_deploys_alone() -> None:
    """The agent imports only its own package and pure helpers, and a process running it loads no store."""
    offences = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "services" / "agent").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in {"services", "domain", "projections", "api"}
        and not module.startswith(AGENT_MAY_IMPORT)
    ]
    assert offences == []
    import subprocess
    import sys

    code = (
        "import sys, services.agent.server\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"('eventsourcing', 'psycopg', 'redis', 'domain', 'projections', 'api', 'stripe') "
        f"and m not in {AGENT_DOMAIN_MODULES!r})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_controller_never_reads_support_tickets_or_mail() -> None:
    """The controller acts on desired and observed state only, never on what a customer wrote (issue 18)."""
    reconciler = [ROOT / "domain" / "reconcile.py", ROOT / "domain" / "repair.py",
                  ROOT / "services" / "workers" / "controller.py", ROOT / "services" / "workers" / "repair.py"]
    for path in reconciler:
        text = path.read_text()
        bad = {m for m in imported_modules(path) if m.split(".")[-1] in ("support", "mail", "tickets", "triage",
                                                                            "inbound_mail", "mail_text")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
        assert "rm_tickets" not in text and "SupportTicket" not in text and "InboundMail" not in text
