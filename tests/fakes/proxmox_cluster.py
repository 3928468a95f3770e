"""A fake Proxmox cluster for driver tests: `FakeProxmox` over HTTPS, and a node agent in each running container.

Each container gets its own loopback address (127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8
is this machine's) and, while it runs, a real node agent (`LocalDriver` behind the agent's
HTTP API, in a thread) listening on `address:agent_port` with the cluster's agent secret and
running its servers on that address, as the `zlh agent` baked into the container template
would. Stopping the container kills its servers and its agent; destroying it removes its
files (its rootfs, backups included, as `purge` does).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme

from services.adapters.proxmox_driver import ProxmoxConfig, ProxmoxDriver
from services.agent.driver import LocalDriver
from services.agent.server import start_agent_in_thread
from tests.fakes.proxmox_api import FakeProxmox
from tests.fakes.serve import ServedApp, serve_app

TOKEN_ID = "zlh@pve!control"
TOKEN_SECRET = "5d1f3a0e-2b7c-4c9e-8f61-0a9d3e4b7c21"
NODES = ("pve", "pve2")
VMID_RANGE = (10000, 10999)
TEMPLATE = "local:vztmpl/zlh-agent-debian-12_amd64.tar.zst"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tls:
    """A `trustme` CA and the fake's server certificate for 127.0.0.1."""

    server_pem: Path
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the server's certificate

    @classmethod
    def make(cls, folder: Path) -> Tls:
        folder.mkdir(parents=True, exist_ok=True)
        ca, other = trustme.CA(), trustme.CA()
        tls = cls(folder / "server.pem", folder / "ca.pem", folder / "other-ca.pem")
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(tls.server_pem)
        ca.cert_pem.write_to_path(tls.ca_file)
        other.cert_pem.write_to_path(tls.other_ca_file)
        return tls


@dataclass
class FakeCluster:
    """The fake API, served, and the agents of its running containers."""

    root: Path
    fake: FakeProxmox
    served: ServedApp
    tls: Tls
    agent_secret: str
    agent_port: int
    node_options: dict[str, Any] = field(default_factory=dict)
    agents: dict[int, tuple[LocalDriver, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{self.served.url}/api2/json"

    def config(self, **overrides: Any) -> ProxmoxConfig:
        values: dict[str, Any] = dict(
            url=self.url, token_id=TOKEN_ID, token_secret=TOKEN_SECRET, nodes=NODES, storage="local-lvm",
            template=TEMPLATE, vmid_range=VMID_RANGE, agent_secret=self.agent_secret, ca_file=str(self.tls.ca_file),
            agent_port=self.agent_port, task_timeout=20.0, shutdown_timeout=5.0, boot_timeout=20.0,
            poll_interval=0.02, api_timeout=10.0,
        )
        values.update(overrides)
        return ProxmoxConfig(**values)

    def driver(self, **overrides: Any) -> ProxmoxDriver:
        return ProxmoxDriver(self.config(**overrides))

    def env(self) -> dict[str, str]:
        """The `ZLH_*` settings that point a `zlh serve` at this cluster."""
        return {
            "ZLH_DRIVER": "proxmox", "ZLH_PROXMOX_URL": self.url, "ZLH_PROXMOX_TOKEN_ID": TOKEN_ID,
            "ZLH_PROXMOX_TOKEN_SECRET": TOKEN_SECRET, "ZLH_PROXMOX_NODES": ",".join(NODES),
            "ZLH_PROXMOX_STORAGE": "local-lvm", "ZLH_PROXMOX_TEMPLATE": TEMPLATE,
            "ZLH_PROXMOX_VMID_RANGE": f"{VMID_RANGE[0]}-{VMID_RANGE[1]}", "ZLH_PROXMOX_CA_FILE": str(self.tls.ca_file),
            "ZLH_PROXMOX_AGENT_PORT": str(self.agent_port), "ZLH_AGENT_SECRET": self.agent_secret,
        }

    def node(self, vmid: int) -> LocalDriver:
        """The agent's `LocalDriver` inside a running container."""
        return self.agents[vmid][0]

    def _hook(self, event: str, vmid: int, ip: str | None) -> None:
        with self._lock:
            if event == "started" and vmid not in self.agents and ip is not None:
                node = LocalDriver(self.root / f"ct-{vmid}", host=ip, **self.node_options)
                _url, stop = start_agent_in_thread(node, self.agent_secret, host=ip, port=self.agent_port)
                self.agents[vmid] = (node, stop)
            elif event in ("stopped", "destroyed") and vmid in self.agents:
                node, stop = self.agents.pop(vmid)
                node.kill_all()
                stop()
            if event == "destroyed":
                shutil.rmtree(self.root / f"ct-{vmid}", ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for node, stop in self.agents.values():
                node.kill_all()
                stop()
            self.agents.clear()
        self.served.stop()


@contextmanager
def fake_cluster(root: Path, **node_options: Any) -> Iterator[FakeCluster]:
    """A served `FakeProxmox` (HTTPS, a token) whose containers boot real node agents; see the module docstring."""
    tls = Tls.make(root / "tls")
    addresses = [f"127.0.0.{i}" for i in range(2, 255)]
    fake = FakeProxmox(nodes=NODES, tokens={TOKEN_ID: TOKEN_SECRET}, addresses=addresses)
    served = serve_app(fake.app, ssl_certfile=tls.server_pem)
    cluster = FakeCluster(root, fake, served, tls, secrets.token_urlsafe(24), free_port(), node_options)
    fake.hooks.append(cluster._hook)
    try:
        yield cluster
    finally:
        cluster.close()
