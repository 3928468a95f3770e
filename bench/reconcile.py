"""`python -m bench.reconcile`: what one reconcile plan costs for N instances, against a baseline.

The baseline is the least any planner must do: one dict lookup per instance for each of its edge
records and its process. The ratio says what the planner's findings, guards and proposals add.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.reconcile import DesiredInstance, Observed, plan, srv_record_name

ZONE, HOST = "play.zlh.localhost", "127.0.0.1"
NOW = datetime(2026, 11, 24, tzinfo=UTC)


def world(n: int) -> tuple[list[DesiredInstance], Observed]:
    instances = [DesiredInstance(UUID(int=i + 1), UUID(int=7), "game", "running", f"s{i}-{i:08x}", 20000 + i, None)
                 for i in range(n)]
    dns = {srv_record_name(i.edge_name, ZONE): i.port for k, i in enumerate(instances) if k % 20}  # 5% drift
    proxy = {i.edge_name: f"{HOST}:{i.port}" for i in instances}
    ids = frozenset(i.id for i in instances)
    return instances, Observed(dns, proxy, ids, ids)


def baseline(instances: list[DesiredInstance], observed: Observed) -> int:
    misses = 0
    for i in instances:
        misses += srv_record_name(i.edge_name, ZONE) not in observed.dns
        misses += i.edge_name not in observed.proxy
        misses += i.id not in observed.processes
    return misses


def timed(fn, *args, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    print(f"{'instances':>10} {'plan ms':>10} {'baseline ms':>12} {'ratio':>7} {'findings':>9}")
    for n in (100, 1_000, 10_000):
        instances, observed = world(n)

        def run(inst: list[DesiredInstance] = instances, obs: Observed = observed) -> object:
            return plan(inst, (), obs, now=NOW, stale_after=timedelta(minutes=15), host=HOST, zone=ZONE)

        findings = len(run().findings)  # type: ignore[attr-defined]
        planned, base = timed(run), timed(baseline, instances, observed)
        print(f"{n:>10,} {planned * 1000:>10.2f} {base * 1000:>12.2f} {planned / base:>6.1f}x {findings:>9}")


if __name__ == "__main__":
    main()
