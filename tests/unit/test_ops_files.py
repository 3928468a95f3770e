"""The ops/ files stay consistent with the code: units run real commands, the env file lists every setting,
alert rules and the dashboard use only metrics the code exports, and every runbook they point at exists."""

from __future__ import annotations

import configparser
import fnmatch
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from projections.monitoring import TARGETS_FILE
from services.settings import Settings, parse_duration

OPS = Path(__file__).resolve().parents[2] / "ops"


def test_env_example_lists_every_setting_and_no_secret_values() -> None:
    lines = [ln for ln in (OPS / "zlh.env.example").read_text().splitlines() if ln and not ln.startswith("#")]
    values = dict(ln.split("=", 1) for ln in lines)
    assert set(values) == {f"ZLH_{name.upper()}" for name in Settings.model_fields}
    for secret in ("ZLH_BOOTSTRAP_ADMIN_TOKEN", "ZLH_STRIPE_WEBHOOK_SECRET", "ZLH_DISCORD_WEBHOOK_URL", "ZLH_SMTP_URL",
                   "ZLH_AGENT_SECRET", "ZLH_PROXMOX_TOKEN_SECRET"):
        assert values[secret] == ""


def test_units_are_hardened_and_run_zlh() -> None:
    units = sorted((OPS / "systemd").glob("*.service"))
    assert [u.stem for u in units] == ["zlh-agent", "zlh-api", "zlh-controller", "zlh-migrate", "zlh-sftp",
                                     "zlh-worker@"]
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        service = parser["Service"]
        assert service["User"] == "zlh" and service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
        assert service["ExecStart"].startswith("/opt/zlh/.venv/bin/zlh ")


# --- Monitoring: Prometheus, alert rules, Grafana, runbooks ----------------------------------------------------

#: Every zlh_* metric the code exports, by type: THE reference for the rules and the dashboard. A rule or panel
#: using any other zlh_* name fails below. Counters are named with their `_total` suffix, as Prometheus sees them.
KNOWN_METRICS: dict[str, str] = {
    "zlh_http_requests_total": "counter",  # {method, route, status}
    "zlh_http_request_duration_seconds": "histogram",  # {method, route}
    "zlh_log_head_position": "gauge",
    "zlh_consumer_position": "gauge",  # {consumer}
    "zlh_consumer_lag_events": "gauge",  # {consumer}
    "zlh_dead_letters": "gauge",  # {consumer}
    "zlh_events_appended_total": "counter",  # {type}
    "zlh_operations": "gauge",  # {kind, phase}
    "zlh_operation_oldest_age_seconds": "gauge",  # {phase}: queued | running
    "zlh_queue_pending": "gauge",  # {queue}
    "zlh_queue_oldest_pending_age_seconds": "gauge",  # {queue}
    "zlh_queue_lag_events": "gauge",  # {queue}
    "zlh_notification_deliveries": "gauge",  # {channel, status}
    "zlh_billing_accounts": "gauge",  # {state}
    "zlh_ready": "gauge",
    "zlh_repairs": "gauge",  # {kind, status}
    "zlh_drift_targets": "gauge",
    "zlh_controller_leader": "gauge",
    "zlh_controller_lock_available": "gauge",
    "zlh_controller_epoch": "gauge",
    "zlh_controller_last_pass_timestamp_seconds": "gauge",
}
CONSUMERS = ("instances", "operations", "backups", "tickets", "announcements", "deliveries", "provisioning",
             "notifications", "monitoring", "repairs", "repair")  # monitoring: the file_sd targets projection
QUEUES = ("provisioning", "repair", "billing_enforcement", "notifications", "scheduler")

PROMETHEUS = OPS / "prometheus"
RULES = PROMETHEUS / "rules" / "zlh.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "zlh.rules.test.yml"
DASHBOARD = OPS / "grafana" / "zlh-dashboard.json"
RUNBOOKS = OPS / "runbooks"
PLACEHOLDER_ROWS: tuple[str, ...] = ()
#: Commands, units and routes the runbooks may name before they exist, because they arrive with open issues.
FUTURE_COMMANDS: set[str] = set()
FUTURE_WORKERS: set[str] = set()
FUTURE_ROUTES: set[str] = set()


def _allowed_series_names() -> set[str]:
    names = set()
    for name, kind in KNOWN_METRICS.items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def _zlh_metrics_in(expr: str) -> set[str]:
    """The zlh_* names a PromQL expression uses as metrics (string literals, i.e. label values, ignored)."""
    return set(re.findall(r"\bzlh_[a-zA-Z0-9_]+", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _runbook_file(url: str) -> Path:
    match = re.fullmatch(r"(?:.*/)?ops/runbooks/([a-z0-9-]+\.md)", url)
    assert match, f"runbook_url {url!r} does not point into ops/runbooks/"
    return RUNBOOKS / match.group(1)


def test_prometheus_config_scrapes_the_api_the_instance_targets_and_node_exporter() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["zlh-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    assert [t for sc in api["static_configs"] for t in sc["targets"]] == ["127.0.0.1:8000"]
    assert [t for sc in jobs["node"]["static_configs"] for t in sc["targets"]] == ["127.0.0.1:9100"]
    files = [f for sd in jobs["zlh-instances"]["file_sd_configs"] for f in sd["files"]]
    assert files == ["/var/lib/zlh/monitoring/targets/*.json"]
    # ... which is where the monitoring projection writes, under the production ZLH_DATA_DIR.
    env = dict(ln.split("=", 1) for ln in (OPS / "zlh.env.example").read_text().splitlines()
               if ln and not ln.startswith("#"))
    assert fnmatch.fnmatch(str(Path(env["ZLH_DATA_DIR"]) / TARGETS_FILE), files[0])
    # Every listener Prometheus talks to on this host is loopback.
    for job in config["scrape_configs"]:
        for sc in job.get("static_configs", []):
            assert all(t.startswith("127.0.0.1:") for t in sc["targets"]), job["job_name"]
    rule_globs = [PROMETHEUS / pattern for pattern in config["rule_files"]]
    assert any(fnmatch.fnmatch(str(RULES), str(g)) for g in rule_globs)
    # The control plane's /metrics may require a token (ZLH_METRICS_TOKEN_FILE): Prometheus reads it from a file.
    for name in ("zlh-api", "zlh-controller"):
        assert jobs[name]["authorization"] == {"type": "Bearer", "credentials_file": "zlh-metrics.token"}, name


def test_every_alert_is_complete_and_its_runbook_exists() -> None:
    alerts = _alerts()
    names = {a["alert"] for a in alerts}
    for required in ("ZlhApiDown", "ZlhNotReady", "ZlhHigh5xxRatio", "ZlhHighLatencyP99", "ZlhQueueStale",
                     "ZlhConsumerLagGrowing", "ZlhOperationStuckRunning", "ZlhNotificationDeliveriesFailing",
                     "ZlhInstanceTargetDown"):
        assert required in names
    for alert in alerts:
        where = alert["alert"]
        assert isinstance(alert.get("expr"), str) and alert["expr"].strip(), where
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), where
        assert alert.get("labels", {}).get("severity") in {"critical", "warning", "info"}, where
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert isinstance(annotations.get(key), str) and annotations[key].strip(), (where, key)
        assert _runbook_file(annotations["runbook_url"]).is_file(), (where, annotations["runbook_url"])
    assert any("up{job=\"zlh-api\"} == 0" in a["expr"] for a in alerts if a["alert"] == "ZlhApiDown")
    assert all(a["for"] == "10m" for a in alerts if a["alert"] == "ZlhQueueStale")


def test_stuck_operations_alert_matches_the_stale_setting() -> None:
    env = dict(ln.split("=", 1) for ln in (OPS / "zlh.env.example").read_text().splitlines()
               if ln and not ln.startswith("#"))
    stale = parse_duration(env["ZLH_OPERATION_STALE_AFTER"])
    assert stale == Settings.model_fields["operation_stale_after"].default
    (stuck,) = [a for a in _alerts() if a["alert"] == "ZlhOperationStuckRunning"]
    assert re.search(rf'zlh_operation_oldest_age_seconds\{{phase="running"\}} > {int(stale)}\b', stuck["expr"])


def test_rules_and_dashboard_use_only_known_metrics() -> None:
    exprs = [a["expr"] for a in _alerts()]
    exprs += [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", []) if "expr" in t]
    used = set().union(*(_zlh_metrics_in(e) for e in exprs))
    assert used, "no zlh_* metric found: the scan is broken"
    assert used <= _allowed_series_names(), f"unknown metrics: {sorted(used - _allowed_series_names())}"
    # Names that never reach Prometheus: prometheus_client appends _total to counters itself.
    assert not any(m.endswith("_created") or m.endswith("_total_total") for m in used)


def test_metric_scan_ignores_label_values_and_sees_histogram_series() -> None:
    expr = 'rate(zlh_http_request_duration_seconds_bucket{route="/zlh_not_a_metric"}[5m]) + zlh_bogus'
    assert _zlh_metrics_in(expr) == {"zlh_http_request_duration_seconds_bucket", "zlh_bogus"}
    assert "zlh_bogus" not in _allowed_series_names()


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in panels if p["type"] == "row"]
    for title in ("API", "Queues", "Projections and consumers", "Operations", "Notification deliveries",
                  "Repairs and controller", "Billing states", *PLACEHOLDER_ROWS):
        assert title in rows
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert target["expr"].strip()
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_placeholder_rows_have_no_queries() -> None:
    top = _dashboard()["panels"]
    for title in PLACEHOLDER_ROWS:
        start = next(i for i, p in enumerate(top) if p["type"] == "row" and p["title"] == title)
        end = next((i for i in range(start + 1, len(top)) if top[i]["type"] == "row"), len(top))
        section = [top[start], *top[start + 1:end], *top[start].get("panels", [])]
        assert not any(p.get("targets") for p in section), title


def test_dashboard_covers_every_panel_area() -> None:
    exprs = " ".join(t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", []))
    used = _zlh_metrics_in(exprs)
    for metric in ("zlh_http_requests_total", "zlh_http_request_duration_seconds_bucket", "zlh_queue_pending",
                   "zlh_queue_oldest_pending_age_seconds", "zlh_queue_lag_events", "zlh_consumer_lag_events",
                   "zlh_operations", "zlh_notification_deliveries"):
        assert metric in used, metric


def test_monitoring_guide_binds_everything_to_loopback() -> None:
    guide = (OPS / "monitoring.md").read_text()
    for needle in ("--web.listen-address=127.0.0.1:9090", "http_addr = 127.0.0.1",
                   "--web.listen-address=127.0.0.1:9100", "ssh -N -L"):
        assert needle in guide, needle


def test_every_runbook_is_indexed_and_its_links_resolve() -> None:
    index = (OPS / "README.md").read_text()
    runbooks = sorted(RUNBOOKS.glob("*.md"))
    assert len(runbooks) >= 10
    for runbook in runbooks:
        assert f"runbooks/{runbook.name}" in index, runbook.name
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", runbook.read_text()):
            assert (runbook.parent / target).resolve().is_file(), (runbook.name, target)
    for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", index):
        assert (OPS / target).is_file(), target


def test_runbooks_name_real_commands_units_and_routes() -> None:
    import typer.main

    from api import routers
    from api.cli import cli
    from services.bootstrap import WORKERS

    group = typer.main.get_command(cli)
    commands = {name: set(getattr(cmd, "commands", {})) for name, cmd in group.commands.items()}  # type: ignore[attr-defined]
    route_patterns = []
    for module in pkgutil.iter_modules(routers.__path__):
        router = getattr(importlib.import_module(f"api.routers.{module.name}"), "router", None)
        for route in router.routes if router is not None else ():  # the portal is a static mount
            route_patterns.append(re.compile(re.sub(r"\\\{[^}]+\\\}", r"[^/]+", re.escape(route.path)) + "/?"))
    workers = set(WORKERS) | FUTURE_WORKERS | {"NAME", "*"}
    seen_commands = seen_routes = 0
    for runbook in RUNBOOKS.glob("*.md"):
        text = runbook.read_text()
        for first, second in re.findall(r"(?:\bzlhc |`zlh )([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", text):
            seen_commands += 1
            assert first in commands or first in FUTURE_COMMANDS, (runbook.name, first)
            if commands.get(first):
                assert second in commands[first], (runbook.name, first, second)
            if first == "worker" and second:
                assert second in WORKERS, (runbook.name, second)
        for unit in re.findall(r"\bzlh-(api|agent|migrate|controller|worker@[^\s`\]),'\"|]+)", text):
            if unit.startswith("worker@"):
                assert unit.removeprefix("worker@") in workers, (runbook.name, unit)
            elif unit != "controller":
                assert (OPS / "systemd" / f"zlh-{unit}.service").is_file(), (runbook.name, unit)
        for path in re.findall(r"(/api/[A-Za-z0-9_{}$/.-]*)", text):
            seen_routes += 1
            path = path.rstrip(".")
            if path in FUTURE_ROUTES:
                continue
            assert any(p.fullmatch(path) for p in route_patterns), (runbook.name, path)
    assert seen_commands > 20 and seen_routes > 10


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_config_and_the_rules_and_the_alerts_fire(tmp_path: Path) -> None:
    # promtool checks that the metrics token file exists: check a copy with a token beside it, as installed.
    installed = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, installed)
    (installed / "zlh-metrics.token").write_text("a-metrics-token\n")
    for args in (("check", "config", str(installed / "prometheus.yml")),
                 ("check", "rules", str(RULES)),
                 ("test", "rules", str(RULE_TESTS))):
        result = _promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.skipif(shutil.which("prometheus-blackbox-exporter") is None,
                    reason="blackbox exporter not installed (apt-get install prometheus-blackbox-exporter)")
def test_blackbox_exporter_accepts_its_config() -> None:
    result = subprocess.run(["prometheus-blackbox-exporter", f"--config.file={PROMETHEUS / 'blackbox.yml'}",
                             "--config.check"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_cover_every_alert() -> None:
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    untested = {a["alert"] for a in _alerts()} - tested - {"ZlhNotificationDeliveriesRetrying", "ZlhHostDiskFilling"}
    assert not untested, f"no promtool test for {sorted(untested)}"


def test_queue_and_consumer_label_values_are_known() -> None:
    exprs = [a["expr"] for a in _alerts()]
    exprs += [t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", []) if "expr" in t]
    for label, known in (("queue", QUEUES), ("consumer", CONSUMERS)):
        for expr in exprs:
            for values in re.findall(rf'\b{label}\s*!?=~?\s*"([^"]*)"', expr):
                assert set(values.split("|")) <= set(known), (label, values)
