"""Provisioning claims no more operations than it runs: a backlog stays queued until a slot is free (issue 13)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from uuid import uuid4

import pytest

from domain.operation import Operation
from services.adapters.fake_driver import FakeDriver
from services.bootstrap import Container
from services.instances import request_instance
from services.ports import InstanceSpec
from tests.integration.conftest import poll


class GatedDriver(FakeDriver):
    """Holds every `allocate_port` until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def allocate_port(self, spec: InstanceSpec) -> int:
        self.gate.wait(30)
        return super().allocate_port(spec)


@pytest.fixture
def driver() -> FakeDriver:
    return GatedDriver()


def _claims(container: Container) -> int:
    page = container.app.recorder.select_notifications(start=1, limit=1000)
    return sum(1 for n in page if n.topic == Operation.Claimed.TOPIC)


def _phases(container: Container) -> list[str]:
    return sorted(r["phase"] for r in container.db.query("SELECT phase FROM rm_operations"))


def test_a_backlog_is_claimed_one_slot_at_a_time(make_container: Callable[..., Container], driver: GatedDriver) -> None:
    container = make_container(provisioning_concurrency=1)
    owner = uuid4()
    for n in range(3):
        request_instance(container.app, owner, f"k{n}", "game", f"s{n}", "minecraft")
    # The read model has all three (it may show the first running before it has applied the others' requests).
    poll(lambda: _phases(container), lambda phases: len(phases) == 3 and "running" in phases)
    # The first operation holds the only slot (its first step waits at the gate): the others stay queued, unclaimed.
    assert _claims(container) == 1
    assert _phases(container) == ["queued", "queued", "running"]
    driver.gate.set()
    poll(lambda: _phases(container), lambda phases: phases == ["succeeded"] * 3, timeout=60)
    assert _claims(container) == 3  # each claimed once, in turn
