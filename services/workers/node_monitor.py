"""The node monitor: probes every node's agent every few seconds and records when one goes or comes back.

An answer is written to `zlh_node_heartbeats` (not the log). A node unheard for `ZLH_NODE_UNREACHABLE_AFTER`
gets `Node.BecameUnreachable` (once: the aggregate refuses a second), which makes its instances show
`unreachable`, their driver calls fail fast (`NodeRouter`) and the notifications worker alert staff
once. When it answers again, `Node.Recovered` records what its agent reports running; the controller's
next pass then reconciles its instances against that, as for any host. Several monitors (one per
`zlh serve`) are harmless: the transitions are idempotent and saved with optimistic concurrency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from domain.node import Node
from projections import nodes as nodes_view
from projections.base import iso
from services.infrastructure import node_health
from services.infrastructure.database import ReadModelDB
from services.infrastructure.store import ZLH
from services.ports import DriverError

log = logging.getLogger(__name__)


class NodeMonitor:
    def __init__(self, app: ZLH, db: ReadModelDB, router: Any, interval: float, unreachable_after: float,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app, self.db, self.router = app, db, router
        self.interval, self.unreachable_after, self.now = interval, unreachable_after, now
        self.started_at = now()
        self.stop_event = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="zlh-node-probe")
        self._probing: set[str] = set()
        self._lock = threading.Lock()

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or self.stop_event
        while not stop.is_set() and not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self.probe_all()
            except Exception:
                log.exception("node monitor pass failed")
            stop.wait(max(self.interval - (time.monotonic() - started), 0.01))
        self._pool.shutdown(wait=False, cancel_futures=True)

    def probe_all(self) -> None:
        """Probe every node at once, each in its own thread: a node that hangs never delays the others (its
        probe still running at the next pass counts as no answer, and is not started twice)."""
        seen = node_health.last_seen(self.db)
        for row in nodes_view.all_nodes(self.db):
            with self._lock:
                if row["id"] in self._probing:
                    self._silent(row, seen.get(row["id"]), "probe_pending")
                    continue
                self._probing.add(row["id"])
            self._pool.submit(self._probe_once, row, seen.get(row["id"]))

    def _probe_once(self, row: dict[str, Any], last: datetime | None) -> None:
        try:
            self.probe(row, last)
        except Exception:
            log.exception("probing node %s failed", row["name"])
        finally:
            with self._lock:
                self._probing.discard(row["id"])

    def _silent(self, row: dict[str, Any], last: datetime | None, why: str) -> None:
        since = last or self.started_at
        if row["status"] != "unreachable" and self.now() - since >= timedelta(seconds=self.unreachable_after):
            log.warning("node %s unheard since %s (%s): unreachable", row["name"], iso(since), why)
            self._transition(UUID(row["id"]), lambda n: n.mark_unreachable(iso(last) if last else None))

    def probe(self, row: dict[str, Any], last: datetime | None) -> None:
        node_id = UUID(row["id"])
        try:
            driver = self.router.node_driver(node_id)
            health = getattr(driver, "health", None)
            if health is not None:
                health()
        except DriverError as exc:
            self._silent(row, last, exc.code)
            return
        node_health.seen(self.db, node_id, self.now())
        if row["status"] == "unreachable":
            try:
                processes = list(driver.observe()["processes"])
            except DriverError:
                return
            log.info("node %s answers again", row["name"])
            self._transition(node_id, lambda n: n.mark_recovered(processes))

    def _transition(self, node_id: UUID, command: Callable[[Node], bool]) -> None:
        for _ in range(20):
            node = self.app.find(node_id, Node)
            if node is None or not command(node):
                return
            try:
                self.app.save(node)
                return
            except IntegrityError:
                continue
