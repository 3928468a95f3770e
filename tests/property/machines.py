"""The common ground of the stateful property tests: a fresh SQLite store, its projections, a fake driver, a
fake edge and a provisioning manager that the rules drive by hand."""

from __future__ import annotations

import tempfile
from pathlib import Path
from uuid import UUID

from hypothesis.stateful import RuleBasedStateMachine

from projections.registry import all_projections
from services.adapters.fake_driver import FakeDriver
from services.adapters.fake_edge import FakeDns, FakeProxy
from services.edge import Edge
from services.infrastructure.database import DatabaseURL, ReadModelDB
from services.infrastructure.migrations import migrate
from services.infrastructure.projection_runner import ProjectionRunner
from services.infrastructure.store import ZLH, store_env
from services.workers.provisioning import ProvisioningManager


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        url = DatabaseURL.parse(f"sqlite:///{Path(self.tmp.name)}/zlh.sqlite3")
        migrate(url)
        self.app, self.db = ZLH(env=store_env(url)), ReadModelDB(url)
        self.runners = [ProjectionRunner(self.app, self.db, p) for p in all_projections()]
        self.driver = FakeDriver()
        self.edge = Edge(FakeDns(), FakeProxy(), "play.zlh.localhost")
        self.provisioning = ProvisioningManager(self.app, self.db, self.driver, self.edge, worker_id="w",
                                                concurrency=1)

    def catch_up(self) -> None:
        """Bring every projection up to the head of the log."""
        for runner in self.runners:
            runner.catch_up()

    def run_pending(self, instance_id: UUID) -> UUID | None:
        """Claim and run the instance's pending operation, as a worker would; return it if this ran it."""
        pending = self.app.repository.get(instance_id).pending_operation_id
        if pending is not None and self.provisioning.claim(pending):
            self.provisioning.execute(pending)
            return pending
        return None

    def teardown(self) -> None:
        self.provisioning.stop(wait=True)
        self.app.close()
        self.db.close()
        self.tmp.cleanup()
