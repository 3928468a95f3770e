"""Prometheus metrics: HTTP by route template, the log and its consumers, queues, operations, deliveries.

Gauges are refreshed from the read models when `/metrics` is scraped. Labels carry no customer
data and no secrets: route templates (never raw paths), event types, kinds, phases, channel names.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from eventsourcing.persistence import Recording
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.bootstrap import Container
from services.infrastructure import dead_letters, logs
from services.queues import operation_stats, queue_stats

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # a caller's X-Request-ID is kept only if it is this tame
REQUESTS = Counter("zlh_http_requests", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("zlh_http_request_duration_seconds", "HTTP request latency", ["method", "route"])
EVENTS = Counter("zlh_events_appended", "Events appended to the log by this process", ["type"])
HEAD = Gauge("zlh_log_head_position", "The newest notification id in the log")
POSITION = Gauge("zlh_consumer_position", "A projection's or process manager's log position", ["consumer"])
LAG = Gauge("zlh_consumer_lag_events", "Events between the log head and a consumer", ["consumer"])
DEAD_LETTERS = Gauge("zlh_dead_letters", "Events a projection or process manager skipped as dead letters, unresolved",
                     ["consumer"])
OPERATIONS = Gauge("zlh_operations", "Operations by kind and phase", ["kind", "phase"])
OLDEST = Gauge("zlh_operation_oldest_age_seconds", "Age of the oldest queued or running operation "
               "(since it last progressed)", ["phase"])
QUEUE_PENDING = Gauge("zlh_queue_pending", "Work items pending", ["queue"])
QUEUE_AGE = Gauge("zlh_queue_oldest_pending_age_seconds", "Age of the oldest pending item", ["queue"])
QUEUE_LAG = Gauge("zlh_queue_lag_events", "Events the queue's process manager has yet to read", ["queue"])
DELIVERIES = Gauge("zlh_notification_deliveries", "Notification deliveries by channel and status",
                   ["channel", "status"])
READY = Gauge("zlh_ready", "1 when the event store answers")
BILLING = Gauge("zlh_billing_accounts", "Billing accounts by recorded enforcement state", ["state"])
REPAIRS = Gauge("zlh_repairs", "Repairs by kind and status", ["kind", "status"])
DRIFT = Gauge("zlh_drift_targets", "Targets with recorded drift findings")
CONTROLLER_LEADER = Gauge("zlh_controller_leader", "1 while this process's controller holds the leader lease")
CONTROLLER_LOCK_UP = Gauge("zlh_controller_lock_available",
                           "1 when the controller can reach its leader lock (Redis), 0 when not")
CONTROLLER_EPOCH = Gauge("zlh_controller_epoch", "The leadership term this process's controller acts under")
CONTROLLER_LAST_PASS = Gauge("zlh_controller_last_pass_timestamp_seconds", "When the last reconcile pass ended")
#: Per running instance, from its node's latest sample, served apart at `/metrics/instances` (this module's
#: `/metrics` never carries ids): labelled as the file_sd targets are (`instance_id`, `kind`, `owner_id`).
INSTANCE_REGISTRY = CollectorRegistry()
INSTANCE_LABELS = ["instance_id", "kind", "owner_id"]
INSTANCE_CPU = Gauge("zlh_instance_cpu_percent", "CPU used by the instance's server (100 = one core)",
                     INSTANCE_LABELS, registry=INSTANCE_REGISTRY)
INSTANCE_MEMORY = Gauge("zlh_instance_memory_bytes", "Memory used by the instance's server", INSTANCE_LABELS,
                        registry=INSTANCE_REGISTRY)
INSTANCE_DISK = Gauge("zlh_instance_disk_bytes", "Bytes the instance's files take", INSTANCE_LABELS,
                      registry=INSTANCE_REGISTRY)
INSTANCE_PLAYERS = Gauge("zlh_instance_players_online", "Players online (game servers)", INSTANCE_LABELS,
                         registry=INSTANCE_REGISTRY)
INSTANCE_PLAYERS_MAX = Gauge("zlh_instance_players_max", "Player slots (game servers)", INSTANCE_LABELS,
                             registry=INSTANCE_REGISTRY)


def install(app: FastAPI, container: Container) -> None:
    if _count_events not in container.app.on_saved:
        container.app.on_saved.append(_count_events)
    app.add_middleware(RequestMetrics)


class RequestMetrics:
    """Pure ASGI middleware: a request id for the logs and the `X-Request-ID` header, and the request's
    count and latency by route template (known once the router has matched, from `scope["route"]`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        token = logs.request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
            template = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
            REQUESTS.labels(scope["method"], template, str(status)).inc()


def _count_events(recordings: list[Recording]) -> None:
    for recording in recordings:
        EVENTS.labels(recording.notification.topic.removeprefix("zlh.")).inc()


def refresh_gauges(container: Container) -> None:
    from projections.deliveries import counts
    from services.infrastructure.log_following import read_positions

    try:
        head = container.app.head()
    except Exception:
        READY.set(0)
        return
    READY.set(1)
    HEAD.set(head)
    for name, position in read_positions(container.db).items():
        if name.endswith("__shadow"):
            continue
        POSITION.labels(name).set(position)
        LAG.labels(name).set(max(head - position, 0))
        DEAD_LETTERS.labels(name).set(0)
    for name, n in dead_letters.counts(container.db).items():
        if not name.endswith("__shadow"):
            DEAD_LETTERS.labels(name).set(n)
    stats = operation_stats(container.db)
    OPERATIONS.clear()
    for row in stats["by_kind_phase"]:
        OPERATIONS.labels(row["kind"], row["phase"]).set(row["n"])
    for phase in ("queued", "running"):
        OLDEST.labels(phase).set(stats["oldest_age"].get(phase) or 0)
    for q in queue_stats(container.db, head):
        QUEUE_PENDING.labels(q["name"]).set(q["pending"])
        QUEUE_AGE.labels(q["name"]).set(q["oldest_pending_age_seconds"] or 0)
        QUEUE_LAG.labels(q["name"]).set(q["lag"])
    from projections.billing import counts as billing_counts

    for state, n in ({s: 0 for s in ("good_standing", "warned", "final_warning", "suspended")}
                     | billing_counts(container.db)).items():
        BILLING.labels(state).set(n)
    DELIVERIES.clear()
    for row in counts(container.db):
        DELIVERIES.labels(row["channel"], row["status"]).set(row["n"])
    refresh_controller_gauges(container)


def refresh_instance_gauges(container: Container) -> None:
    """CPU, memory, disk and players of every running instance, from its node's latest sample (only when this
    process already talks to a node: a scrape never starts an agent)."""
    from projections.instances import list_running
    from services.stats import node_samples

    gauges = (INSTANCE_CPU, INSTANCE_MEMORY, INSTANCE_DISK, INSTANCE_PLAYERS, INSTANCE_PLAYERS_MAX)
    for gauge in gauges:
        gauge.clear()
    if container.given_driver is None:
        return
    samples = node_samples(container.driver)  # every node (the node router), once the local one exists
    if not samples:
        return
    for row in list_running(container.db):
        sample = samples.get(row["id"])
        if sample is None:
            continue
        labels = (row["id"], row["kind"], row["owner_id"])
        for gauge, key in zip(gauges, ("cpu_percent", "memory_bytes", "disk_bytes", "players_online",
                                       "players_max"), strict=True):
            if sample.get(key) is not None:
                gauge.labels(*labels).set(sample[key])


def refresh_controller_gauges(container: Container) -> None:
    """Repairs and drift from the read model; leadership from this process's controller, if any."""
    from projections import repairs

    REPAIRS.clear()
    try:
        for row in repairs.counts(container.db):
            REPAIRS.labels(row["kind"], row["status"]).set(row["n"])
        DRIFT.set(len(repairs.drifting_targets(container.db)))
    except Exception:  # the read models are unreachable: leadership below is still worth reporting
        log.warning("could not read the repairs read model for /metrics", exc_info=True)
    controller = container.controller
    if controller is None:
        return
    status = controller.status
    CONTROLLER_LEADER.set(1 if status.state == "leader" else 0)
    CONTROLLER_LOCK_UP.set(0 if status.state == "lock_unavailable" else 1)
    CONTROLLER_EPOCH.set(status.epoch or 0)
    if status.last_pass_at is not None:
        CONTROLLER_LAST_PASS.set(status.last_pass_at.timestamp())
