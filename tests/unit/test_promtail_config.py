"""ops/promtail/promtail.yml parses, and its pipeline turns the services' real log lines into what Loki should get.

No promtail binary is packaged for Debian, PyPI or npm (Grafana ships it only as a download), so its own
`-check-syntax` cannot run here. Instead this test reads the YAML, checks its shape against promtail's
documented configuration, and runs the pipeline's stages (`replace`, `json` with JMESPath expressions as
promtail evaluates them, `timestamp`, `labels`, `structured_metadata`) on lines written by the services'
own formatter (services/infrastructure/logs.py).
"""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jmespath
import yaml

from services.infrastructure import logs

OPS = Path(__file__).resolve().parents[2] / "ops"
CONFIG = OPS / "promtail" / "promtail.yml"

#: Promtail's top-level sections and pipeline stages (grafana/loki clients/pkg/promtail, docs "Configure Promtail").
TOP_LEVEL = {"server", "positions", "clients", "scrape_configs", "limits_config", "target_config", "options",
             "tracing", "global"}
STAGES = {"docker", "cri", "regex", "json", "logfmt", "replace", "multiline", "pack", "template", "timestamp",
          "output", "labels", "labelallow", "labeldrop", "structured_metadata", "metrics", "tenant", "match",
          "drop", "limit", "static_labels", "sampling", "decolorize", "geoip", "eventlogmessage"}
#: Labels index streams in Loki: only bounded values belong there, never an id per request.
BOUNDED_LABELS = {"job", "unit", "level", "logger", "host"}
TOKEN = "zlh_s3cr3t-TOKEN.value"


def load() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def run_pipeline(stages: list[dict[str, Any]], line: str) -> tuple[str, dict[str, str], dict[str, str], datetime]:
    """(line, labels, structured metadata, timestamp) as promtail's stages make them from one journal MESSAGE."""
    extracted: dict[str, Any] = {}
    labels: dict[str, str] = {}
    metadata: dict[str, str] = {}
    timestamp = datetime.min
    for stage in stages:
        ((name, spec),) = stage.items()
        if name == "replace":
            def blank(match: re.Match[str], spec: dict[str, Any] = spec) -> str:
                text, start = match.group(0), match.start(0)
                spans = [match.span(g) for g in range(1, (match.re.groups or 0) + 1)] or [match.span(0)]
                for begin, end in reversed(spans):
                    text = text[:begin - start] + spec["replace"] + text[end - start:]
                return text
            line = re.sub(spec["expression"], blank, line)
        elif name == "json":
            try:
                document = json.loads(line)
            except ValueError:
                continue  # promtail logs the failure and passes the line on unchanged
            for key, expression in spec["expressions"].items():
                value = jmespath.search(expression or key, document)
                if value is not None:
                    extracted[key] = value
        elif name == "timestamp":
            assert spec["format"] == "RFC3339Nano"
            timestamp = datetime.fromisoformat(extracted[spec["source"]].replace("Z", "+00:00"))
        elif name == "labels":
            labels |= {k: str(extracted[v or k]) for k, v in spec.items() if (v or k) in extracted}
        elif name == "structured_metadata":
            metadata |= {k: str(extracted[v or k]) for k, v in spec.items() if (v or k) in extracted}
        else:
            raise AssertionError(f"the test does not run the {name!r} stage: teach it, or keep the pipeline simple")
    return line, labels, metadata, timestamp


def service_lines() -> list[str]:
    """Lines written by the services' own formatter: a request, an operation, a failure with a traceback."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactSecrets())
    logger = logging.getLogger("services.workers.provisioning")
    access = logging.getLogger("uvicorn.access")
    for each in (logger, access):
        each.addHandler(handler)
        each.setLevel(logging.INFO)
    try:
        token = logs.request_id.set("req-1234")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/api/instances/x/console/ws?ticket=tkt9", "1.1",
                    101)
        logs.request_id.reset(token)
        with logs.operation_context("op-1", "inst-1"):
            logger.warning("step %s failed", "wait_connectable")
            try:
                raise RuntimeError(f"agent said no to Authorization: Bearer {TOKEN}")
            except RuntimeError:
                logger.exception("operation failed")
    finally:
        for each in (logger, access):
            each.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_the_config_has_promtails_shape() -> None:
    config = load()
    assert set(config) <= TOP_LEVEL, set(config) - TOP_LEVEL
    assert config["server"]["http_listen_address"] == "127.0.0.1"
    assert config["positions"]["filename"].startswith("/var/lib/promtail/")
    assert all(client["url"].endswith("/loki/api/v1/push") for client in config["clients"])
    (job,) = config["scrape_configs"]
    assert job["journal"]["json"] is False  # the line shipped is the MESSAGE: the service's own JSON object
    for stage in job["pipeline_stages"]:
        assert len(stage) == 1 and set(stage) <= STAGES, stage


def test_only_the_control_planes_units_are_kept() -> None:
    (job,) = load()["scrape_configs"]
    keep = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert [r["source_labels"] for r in keep] == [["__journal__systemd_unit"]]
    pattern = re.compile(keep[0]["regex"])  # relabel regexes are anchored at both ends
    units = [p.name.replace("@.service", "@repair.service") for p in (OPS / "systemd").glob("*.service")]
    assert units and all(pattern.fullmatch(unit) for unit in units), units
    assert not any(pattern.fullmatch(other) for other in ("sshd.service", "postgresql.service", "zlh"))
    assert {"source_labels": ["__journal__systemd_unit"], "target_label": "unit"} in job["relabel_configs"]


def test_every_field_the_services_log_is_shipped_and_no_secret() -> None:
    (job,) = load()["scrape_configs"]
    stages = job["pipeline_stages"]
    lines = service_lines()
    assert len(lines) == 3, lines
    shipped = [run_pipeline(stages, line) for line in lines]

    access, warning, failure = shipped
    assert access[1] == {"level": "info", "logger": "uvicorn.access"}
    assert access[2] == {"request_id": "req-1234"}
    assert "tkt9" not in access[0] and "ticket=[redacted]" in access[0]
    assert warning[1] == {"level": "warning", "logger": "services.workers.provisioning"}
    assert warning[2] == {"operation_id": "op-1", "instance_id": "inst-1"}
    assert failure[1]["level"] == "error"
    assert TOKEN not in failure[0] and "Bearer [redacted]" in failure[0]
    for line, labels, _, timestamp in shipped:
        assert set(labels) <= BOUNDED_LABELS, labels
        assert timestamp.tzinfo is not None and timestamp.year >= 2024
        assert json.loads(line)["message"]  # the line stays the whole JSON object, for `| json` in LogQL

    # Every field the formatter may add is extracted: a new context id in logs.py must be shipped too.
    json_stage = next(s["json"] for s in stages if "json" in s)
    assert set(logs._CONTEXT) | {"ts", "level", "logger"} <= set(json_stage["expressions"])
    static = job["journal"]["labels"]
    assert set(static) <= BOUNDED_LABELS
