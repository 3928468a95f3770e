"""The lifecycle smoke test with `ZLH_DRIVER=proxmox`: a real `zlh serve` against `FakeProxmox` over HTTPS.

The fake cluster (`tests.fakes.proxmox_cluster`) runs in the test process: each container it starts gets
its own loopback address and a node agent on `ZLH_PROXMOX_AGENT_PORT` there, running real servers
(flying-squid, JupyterLab), as the `zlh agent` baked into the container template does. The control plane
finds the container's address through the API (`/interfaces`) and reaches the agent with
`ZLH_AGENT_SECRET`; the API token and the CA file are the only way in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, Server
from tests.e2e.test_lifecycle_smoke import Recorder, check_dev_lifecycle, check_game_lifecycle
from tests.e2e.test_provisioning import new_customer
from tests.fakes.proxmox_cluster import TOKEN_SECRET, FakeCluster, fake_cluster
from tests.real_servers import cache_dir


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_cluster(tmp_path / "cluster", cache_dir=cache_dir()) as c:
        yield c


def test_game_lifecycle_smoke_on_proxmox(serve: Callable[..., Server], cluster: FakeCluster, tmp_path: Path) -> None:
    server = serve(**cluster.env(), ZLH_RATE_LIMIT_PER_MINUTE="100000")  # the polls of slow steps add up

    def container_destroyed(iid: str, backup_id: str) -> None:
        assert cluster.fake.containers == {}  # destroyed with purge: the files and backups inside with it
        kinds = cluster.fake.task_kinds()
        assert kinds[:2] == ["vzcreate", "vzstart"] and kinds[-2:] == ["vzshutdown", "vzdestroy"]
        assert kinds.count("vzcreate") == 1  # every later step found (adopted) the same container
        vmid = next(iter(cluster.fake.tasks)).split(":")[6]
        assert not (tmp_path / "cluster" / f"ct-{vmid}").exists()

    # What must never reach a customer: the agent's secret, a container's agent URL, the API token.
    agent = Agent(f"http://127.0.0.2:{cluster.agent_port}", cluster.agent_secret, None)  # type: ignore[arg-type]
    with Recorder(new_customer(server, "alice@example.com")) as alice, \
            Recorder(new_customer(server, "bob@example.com")) as bob:
        check_game_lifecycle(alice, bob, agent, tmp_path, after_delete=container_destroyed)
        for body in alice.bodies + bob.bodies:
            assert TOKEN_SECRET.encode() not in body


def test_dev_lifecycle_smoke_on_proxmox(serve: Callable[..., Server], cluster: FakeCluster) -> None:
    server = serve(**cluster.env(), ZLH_RATE_LIMIT_PER_MINUTE="100000")  # the polls of slow steps add up
    with Recorder(new_customer(server, "carol@example.com")) as carol:
        check_dev_lifecycle(carol)
    assert cluster.fake.containers == {}
    assert cluster.fake.task_kinds().count("vzdestroy") == 1
