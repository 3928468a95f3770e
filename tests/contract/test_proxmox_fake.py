"""`proxmoxer` against `FakeProxmox`: the fake speaks the API the library (and a future LXC driver) expects.

The fake is served over HTTPS with a `trustme` certificate, and proxmoxer verifies it
against that CA file (as `ZLH_PROXMOX_CA_FILE` will), with API-token auth. Tasks are
polled with a deadline; the fake ends them by poll count, never by elapsed time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from tests.fakes.proxmox_api import FakeProxmox
from tests.fakes.serve import ServedApp, serve_app

TOKEN_ID = "zlh@pve!control"
SECRET = "0b4e3c1e-7d0f-4f5e-9a59-2a3c7c0d5e11"
UPID = re.compile(r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):(\d+):zlh@pve!control:$")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(server PEM with key and chain, CA file) for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_pem, ca_pem = folder / "server.pem", folder / "ca.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(server_pem)
    ca.cert_pem.write_to_path(ca_pem)
    return server_pem, ca_pem


@pytest.fixture
def fake() -> FakeProxmox:
    return FakeProxmox(nodes=["pve", "pve2"], tokens={TOKEN_ID: SECRET}, addresses=["127.0.0.2", "127.0.0.3"])


@pytest.fixture
def served(fake: FakeProxmox, tls: tuple[Path, Path]) -> Iterator[ServedApp]:
    with serve_app(fake.app, ssl_certfile=tls[0]) as server:
        yield server


def client(served: ServedApp, ca: Path, secret: str = SECRET) -> ProxmoxAPI:
    user, _, token = TOKEN_ID.partition("!")
    return ProxmoxAPI(
        f"{served.host}:{served.port}",
        user=user,
        token_name=token,
        token_value=secret,
        verify_ssl=str(ca),
        timeout=10,
    )


def close(api: ProxmoxAPI) -> None:
    """Close the client's pooled connections (the server would otherwise wait on an idle TLS socket)."""
    api._store["session"].close()


@pytest.fixture
def pve(served: ServedApp, tls: tuple[Path, Path]) -> Iterator[ProxmoxAPI]:
    api = client(served, tls[1])
    yield api
    close(api)


def wait_task(pve: ProxmoxAPI, upid: str, node: str = "pve", timeout: float = 10.0) -> dict[str, Any]:
    """Poll a task until it stops (deadline `timeout` s); return its final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = pve.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        if time.monotonic() >= deadline:
            pytest.fail(f"task {upid} still running after {timeout}s")
        time.sleep(0.01)  # polling interval, bounded by the deadline


def create(pve: ProxmoxAPI, vmid: int = 10001, **extra: Any) -> str:
    params: dict[str, Any] = {
        "vmid": vmid,
        "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
        "hostname": f"zlh-{vmid}",
        "storage": "local-lvm",
        "rootfs": "local-lvm:8",
        "memory": 2048,
        "cores": 2,
        "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
        "tags": "zlh;game",
        "description": "zlh instance 1a2b3c4d-0000-4000-8000-000000000001",
        "password": "not-shown-in-config",
        "ssh-public-keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake zlh",
        "unprivileged": 1,
        **extra,
    }
    return pve.nodes("pve").lxc.post(**params)


def raises(call: Callable[[], Any]) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def test_version_and_nodes(pve: ProxmoxAPI) -> None:
    assert pve.version.get()["version"].startswith("8.")
    assert [n["node"] for n in pve.nodes.get()] == ["pve", "pve2"]


def test_create_poll_start_interfaces_stop_destroy(pve: ProxmoxAPI, fake: FakeProxmox) -> None:
    fake.task_polls = 1  # each task answers `running` once
    upid = create(pve)
    assert UPID.match(upid).groups() == ("vzcreate", "10001")
    assert pve.nodes("pve").lxc(10001).config.get()["lock"] == "create"
    assert wait_task(pve, upid)["exitstatus"] == "OK"

    config = pve.nodes("pve").lxc(10001).config.get()
    assert "lock" not in config
    assert config["tags"] == "zlh;game"
    assert config["description"].startswith("zlh instance ")
    assert config["rootfs"] == "local-lvm:vm-10001-disk-0,size=8G"
    assert (config["memory"], config["cores"], config["hostname"]) == (2048, 2, "zlh-10001")
    assert "password" not in config and "ssh-public-keys" not in config
    assert pve.nodes("pve").lxc(10001).status.current.get()["status"] == "stopped"

    assert wait_task(pve, pve.nodes("pve").lxc(10001).status.start.post())["exitstatus"] == "OK"
    current = pve.nodes("pve").lxc(10001).status.current.get()
    assert (current["status"], current["vmid"], current["tags"]) == ("running", "10001", "zlh;game")
    eth0 = next(i for i in pve.nodes("pve").lxc(10001).interfaces.get() if i["name"] == "eth0")
    assert eth0["inet"] == "127.0.0.2/24"

    listed = pve.nodes("pve").lxc.get()
    assert [(c["vmid"], c["status"]) for c in listed] == [("10001", "running")]  # a string, as PVE sends it
    resources = pve.cluster.resources.get(type="vm")
    assert [(r["id"], r["vmid"], r["node"]) for r in resources] == [("lxc/10001", 10001, "pve")]

    running = raises(lambda: pve.nodes("pve").lxc(10001).delete(purge=1))
    assert running.status_code == 500
    assert wait_task(pve, pve.nodes("pve").lxc(10001).status.shutdown.post(timeout=30))["exitstatus"] == "OK"
    assert pve.nodes("pve").lxc(10001).status.current.get()["status"] == "stopped"

    upid = pve.nodes("pve").lxc(10001).delete(**{"purge": 1, "destroy-unreferenced-disks": 1})
    assert UPID.match(upid).group(1) == "vzdestroy"
    assert wait_task(pve, upid)["exitstatus"] == "OK"
    gone = raises(lambda: pve.nodes("pve").lxc(10001).config.get())
    assert gone.status_code == 500
    assert fake.task_kinds() == ["vzcreate", "vzstart", "vzshutdown", "vzdestroy"]


def test_create_and_start_in_one_step_with_a_static_address(pve: ProxmoxAPI) -> None:
    upid = create(pve, 10002, start=1, net0="name=eth0,bridge=vmbr0,ip=127.0.0.9/24,gw=127.0.0.1")
    wait_task(pve, upid)
    eth0 = next(i for i in pve.nodes("pve").lxc(10002).interfaces.get() if i["name"] == "eth0")
    assert eth0["inet"] == "127.0.0.9/24"


def test_tasks_take_polls_and_can_fail_or_hang(pve: ProxmoxAPI, fake: FakeProxmox) -> None:
    fake.task_polls = 2
    upid = create(pve)
    states = [pve.nodes("pve").tasks(upid).status.get()["status"] for _ in range(3)]
    assert states == ["running", "running", "stopped"]

    fake.task_polls = 0
    fake.fail_next_task("vzstart", "startup for container '10001' failed")
    failed = wait_task(pve, pve.nodes("pve").lxc(10001).status.start.post())
    assert failed["exitstatus"] == "startup for container '10001' failed"
    assert pve.nodes("pve").lxc(10001).status.current.get()["status"] == "stopped"

    fake.hang_next_task("vzcreate")
    hung = create(pve, 10003)
    for _ in range(5):
        assert pve.nodes("pve").tasks(hung).status.get()["status"] == "running"
    assert pve.nodes("pve").lxc(10003).config.get()["lock"] == "create"
    locked = raises(lambda: pve.nodes("pve").lxc(10003).status.start.post())
    assert locked.status_code == 500
    fake.finish_task(hung, "unable to create CT 10003 - no space left on device")
    assert wait_task(pve, hung)["exitstatus"].endswith("no space left on device")
    assert raises(lambda: pve.nodes("pve").lxc(10003).config.get()).status_code == 500  # a failed create leaves none
    log = pve.nodes("pve").tasks(hung).log.get()
    assert log[-1]["t"].startswith("TASK ERROR")


def test_config_update_with_digest(pve: ProxmoxAPI) -> None:
    wait_task(pve, create(pve))
    config = pve.nodes("pve").lxc(10001).config.get()
    pve.nodes("pve").lxc(10001).config.put(tags="zlh;game;suspended", digest=config["digest"])
    assert pve.nodes("pve").lxc(10001).config.get()["tags"] == "zlh;game;suspended"
    stale = raises(lambda: pve.nodes("pve").lxc(10001).config.put(memory=4096, digest=config["digest"]))
    assert stale.status_code == 500
    pve.nodes("pve").lxc(10001).config.put(delete="description")
    assert "description" not in pve.nodes("pve").lxc(10001).config.get()


def test_errors_look_like_pve(pve: ProxmoxAPI) -> None:
    wait_task(pve, create(pve))
    duplicate = raises(lambda: create(pve))
    assert duplicate.status_code == 500
    missing = raises(lambda: pve.nodes("pve").lxc.post(vmid=10009))
    assert missing.status_code == 400
    assert missing.errors == {"ostemplate": "property is missing and it is not optional"}
    bad_tag = raises(lambda: create(pve, 10010, tags="zlh;bad tag!"))
    assert bad_tag.status_code == 400 and "tags" in bad_tag.errors
    assert raises(lambda: pve.nodes("pve").lxc(10001).status.stop.post()).status_code == 500  # not running
    assert raises(lambda: pve.nodes("pve2").lxc(10001).config.get()).status_code == 500  # on another node
    assert raises(lambda: pve.nodes("nope").lxc.get()).status_code == 500


def test_a_wrong_token_is_rejected(served: ServedApp, tls: tuple[Path, Path], fake: FakeProxmox) -> None:
    api = client(served, tls[1], secret="wrong")
    try:
        rejected = raises(lambda: api.nodes.get())
    finally:
        close(api)
    assert rejected.status_code == 401
    assert fake.containers == {}


def test_a_request_fault_can_be_injected(pve: ProxmoxAPI, fake: FakeProxmox) -> None:
    fake.fail_next_request(503, "service unavailable", method="POST")
    assert raises(lambda: create(pve)).status_code == 503
    wait_task(pve, create(pve))
    assert list(fake.containers) == [10001]
