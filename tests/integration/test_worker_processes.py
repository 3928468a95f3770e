"""Two real `zlh worker provisioning` processes on one PostgreSQL never run an operation twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from uuid import uuid4

import pytest

from domain.operation import Phase
from services.agent.driver import LocalDriver
from services.infrastructure.database import DatabaseURL
from services.infrastructure.migrations import migrate
from services.infrastructure.store import ZLH, store_env
from services.instances import request_instance
from tests.integration.conftest import poll

pytestmark = pytest.mark.real_services  # runs worker processes on a real database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_two_worker_processes_share_the_queue(pg_url: str, tmp_path: Path) -> None:
    url = DatabaseURL.parse(pg_url)
    migrate(url)
    data = tmp_path / "data"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")}, "PYTHONPATH": str(ROOT),
           "ZLH_DATABASE_URL": pg_url, "ZLH_DATA_DIR": str(data)}
    app = ZLH(env=store_env(url))
    owner = uuid4()
    # Queued before the workers start, so both race for the same backlog.
    accepted = [request_instance(app, owner, f"k{n}", kind, f"s{n}", template)
                for n, (kind, template) in enumerate([("game", "minecraft"), ("dev", "python")] * 4)]
    workers = []
    for n in range(2):
        with open(tmp_path / f"worker{n}.log", "wb") as log:
            workers.append(subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "provisioning"],
                                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for a in accepted:
            poll(lambda a=a: app.repository.get(a.operation_id).phase,
                 lambda p: p in (Phase.SUCCEEDED, Phase.FAILED), timeout=60)
        claimers = []
        for a in accepted:
            events = app.stream(a.operation_id)
            names = [type(e).__name__ for e in events]
            assert names.count("Claimed") == 1 and names[-1] == "Succeeded", names
            assert names.count("StepStarted") == names.count("StepSucceeded")
            claimers.append(next(e.worker_id for e in events if type(e).__name__ == "Claimed"))
            # Exactly one server process was started for the instance, and it is alive.
            assert (data / "runtime" / str(a.instance_id) / "server.pid").exists()
        assert len(set(claimers)) <= 2
        for w in workers:
            assert w.poll() is None, "a worker died"
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
        app.close()
        LocalDriver(data).kill_all()
    logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in range(2))
    assert "Traceback" not in logs, logs[-3000:]
