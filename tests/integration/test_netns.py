"""The network-namespace host harness (tests/netns.py): real separate hosts on this one machine.

Needs root (CI runs as root); without it these tests fail with `NetnsUnavailable` saying why, never skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests import netns
from tests.netns import ETC_NETNS, Host, HostNetwork, NetnsUnavailable, cleanup_stale, connect_error

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
PORT = 8080  # every host has its own port space: the same port on every host never collides
T = TypeVar("T")

# GET a URL from inside a host (no proxies), print the body.
_GET = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(sys.argv[1], timeout=float(sys.argv[2])).read().decode(), end="")
"""


def eventually(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 15.0) -> T:
    """Call `fetch` until `done(result)`; fail with the last result after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last: {result!r}")
        time.sleep(0.05)


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {entry["name"] for entry in json.loads(out or "[]")}


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {entry["ifname"] for entry in json.loads(out)}


def get(url: str) -> str:
    """GET from the root namespace (where the control plane runs)."""
    response = httpx.get(url, timeout=2, trust_env=False)
    response.raise_for_status()
    return response.text


def get_from(host: Host, url: str) -> str:
    """GET from inside `host`."""
    proc = host.call([sys.executable, "-c", _GET, url, "2"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def serve_http(host: Host, bind: str, directory: Path, port: int = PORT) -> subprocess.Popen[bytes]:
    """A tiny HTTP server inside `host` serving `directory` (which holds name.txt = the host's name)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "name.txt").write_text(host.name)
    return host.run([sys.executable, "-m", "http.server", "--bind", bind, "--directory", directory, str(port)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_serving(host: Host, address: str, port: int = PORT) -> None:
    eventually(lambda: host.connect_error(address, port), lambda e: e is None, f"server in {host.name} at {address}")


@pytest.fixture
def net() -> Iterator[HostNetwork]:
    with HostNetwork(["a", "b"]) as network:
        yield network


def test_layout_names_addresses_and_routes(net: HostNetwork) -> None:
    a, b = net["a"], net["b"]
    assert net.bridge == f"zlhbr{net.run_id}" and len(net.bridge) <= netns.IFNAMSIZ
    assert (a.netns, b.netns) == (f"zlh-{net.run_id}-a", f"zlh-{net.run_id}-b")
    assert {a.netns, b.netns} <= namespaces()
    assert {net.bridge, a.veth, b.veth} <= links()
    assert net.gateway == str(net.subnet.network_address + 1)
    assert (a.address, b.address) == (str(net.subnet.network_address + 2), str(net.subnet.network_address + 3))
    routes = a.call(["ip", "route"]).stdout
    assert f"default via {net.gateway} dev eth0" in routes
    assert f"inet {a.address}/24" in a.call(["ip", "addr", "show", "eth0"]).stdout
    assert "UP" in a.call(["ip", "link", "show", "lo"]).stdout
    assert f"dev {net.bridge}" in subprocess.run(["ip", "route", "get", a.address], capture_output=True,
                                                  text=True, check=True).stdout
    # run() passes env and Popen arguments through to the program, which sees only its own network.
    proc = a.run([sys.executable, "-c", "import os, socket; print(os.environ['ZLH_HOST'], socket.if_nameindex())"],
                 env={"ZLH_HOST": "a"}, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert out.startswith("a [") and "'eth0'" in out and "zlhbr" not in out


def test_servers_reachable_from_root_and_each_other_and_disconnect_isolates(
        net: HostNetwork, tmp_path: Path) -> None:
    a, b = net["a"], net["b"]
    servers = {h.name: serve_http(h, h.address, tmp_path / h.name) for h in (a, b)}
    for h in (a, b):
        wait_serving(h, h.address)
    url_a, url_b = f"http://{a.address}:{PORT}/name.txt", f"http://{b.address}:{PORT}/name.txt"

    assert get(url_a) == "a" and get(url_b) == "b"  # root -> each host, same port on both
    assert get_from(b, url_a) == "a" and get_from(a, url_b) == "b"  # host <-> host
    assert get_from(b, f"http://a:{PORT}/name.txt") == "a"  # host names resolve inside the hosts

    a.disconnect()
    assert not a.connected
    eventually(lambda: connect_error(a.address, PORT, timeout=0.5), lambda e: e is not None, "root -> a cut off")
    eventually(lambda: b.connect_error(a.address, PORT, timeout=0.5), lambda e: e is not None, "b -> a cut off")
    assert a.connect_error(b.address, PORT, timeout=0.5) is not None  # and a reaches nothing
    assert servers["a"].poll() is None, "disconnect must not kill the host's processes"
    assert get(url_b) == "b", "only a went away"

    a.reconnect()
    assert a.connected
    eventually(lambda: connect_error(a.address, PORT, timeout=0.5), lambda e: e is None, "root -> a back")
    assert get(url_a) == "a" and get_from(b, url_a) == "a" and get_from(a, url_b) == "b"


def test_loopback_is_each_hosts_own(net: HostNetwork, tmp_path: Path) -> None:
    a, b = net["a"], net["b"]
    with socket.socket() as root_listener:  # the root namespace holds 127.0.0.1:port ...
        root_listener.bind(("127.0.0.1", 0))
        root_listener.listen(8)
        port = root_listener.getsockname()[1]
        serve_http(a, "127.0.0.1", tmp_path / "a", port)  # ... and host a binds the same one: no conflict
        wait_serving(a, "127.0.0.1", port)

        assert get_from(a, f"http://127.0.0.1:{port}/name.txt") == "a"  # a's own loopback
        assert "Connection refused" in (b.connect_error("127.0.0.1", port) or "")  # b's loopback has nothing
        assert "Connection refused" in (connect_error(a.address, port) or "")  # not exposed beyond a
        with pytest.raises(httpx.HTTPError):  # root's 127.0.0.1 is root's listener, not a's server
            httpx.get(f"http://127.0.0.1:{port}/name.txt", timeout=0.5, trust_env=False)
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass


def test_hosts_reach_the_control_plane_at_the_gateway(net: HostNetwork) -> None:
    with socket.socket() as control_plane:
        control_plane.bind((net.gateway, 0))
        control_plane.listen(8)
        port = control_plane.getsockname()[1]
        for host in net:
            assert host.connect_error(net.gateway, port) is None
            assert host.connect_error("gateway", port) is None  # the name resolves inside every host
            # The root's loopback is not the host's: a control plane bound to 127.0.0.1 is out of reach.
            assert host.connect_error("127.0.0.1", port) is not None


def test_kill_all_kills_tracked_and_untracked_processes(net: HostNetwork, tmp_path: Path) -> None:
    a = net["a"]
    tracked = a.run(["sleep", "600"])
    a.call(["sh", "-c", "sleep 600 >/dev/null 2>&1 &"])  # an orphan nobody tracks
    eventually(a.pids, lambda pids: len(pids) == 2, "both sleeps running")
    untracked = next(pid for pid in a.pids() if pid != tracked.pid)
    a.kill_all()
    assert tracked.returncode == -signal.SIGKILL
    assert a.pids() == []
    eventually(lambda: _running(untracked), lambda running: not running, "orphan gone")
    # The host itself stays usable.
    serve_http(a, a.address, tmp_path / "a")
    wait_serving(a, a.address)
    assert get(f"http://{a.address}:{PORT}/name.txt") == "a"


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_cleanup_removes_every_namespace_link_and_process(tmp_path: Path) -> None:
    with HostNetwork(["a", "b", "c"]) as net:
        names = {h.netns for h in net} | {h.veth for h in net} | {net.bridge}
        server = serve_http(net["a"], net["a"].address, tmp_path / "a")
        net["b"].call(["sh", "-c", "sleep 600 >/dev/null 2>&1 &"])
        orphan = eventually(net["b"].pids, bool, "orphan running")[0]
        net["c"].disconnect()  # cleanup copes with a disconnected host
    assert server.returncode is not None
    eventually(lambda: _running(orphan), lambda running: not running, "orphan killed")
    assert not names & (namespaces() | links())
    assert not list(ETC_NETNS.glob(f"zlh-{net.run_id}-*"))
    assert not (netns.STATE_DIR / f"{net.run_id}.lock").exists()
    assert net.leftovers() == []


def test_cleanup_after_a_failing_test() -> None:
    with pytest.raises(ZeroDivisionError), HostNetwork(["a"]) as net:
        net["a"].run(["sleep", "600"])
        1 / 0  # noqa: B018
    assert net.leftovers() == []
    assert net["a"].netns not in namespaces() and net.bridge not in links()


_CHILD = """
import json, subprocess, sys
from tests.netns import HostNetwork
with HostNetwork(["x"]) as net:
    sleep = net["x"].run(["sleep", "600"], stdout=subprocess.DEVNULL)  # not our stdout: the test reads it
    print(json.dumps({"names": [net["x"].netns, net["x"].veth, net.bridge], "sleep": sleep.pid}), flush=True)
    sys.stdin.read()
"""


def test_stale_cleanup_removes_crashed_runs_and_spares_live_ones() -> None:
    def child() -> tuple[subprocess.Popen[str], dict[str, Any]]:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=ROOT, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout is not None
        return proc, json.loads(proc.stdout.readline())

    live, live_info = child()
    crashed, crashed_info = child()
    try:
        # Crash it while holding the machine lock, so no other run (another xdist worker starting up)
        # cleans up after it before we look.
        with netns._machine_lock():
            crashed.kill()
            crashed.wait(timeout=30)
            assert set(crashed_info["names"]) <= namespaces() | links()  # the crash left everything behind
            assert _running(crashed_info["sleep"])
            netns._cleanup_stale_locked(netns._ip_binary())  # what cleanup_stale() does under the lock
        cleanup_stale()  # and the public entry point copes with nothing left to do

        assert not set(crashed_info["names"]) & (namespaces() | links())
        assert not _running(crashed_info["sleep"]), "processes left in a crashed run's hosts are killed"
        assert set(live_info["names"]) <= namespaces() | links(), "a live run (another process) is untouched"
        assert _running(live_info["sleep"])
    finally:
        crashed.kill()
        crashed.wait()
        crashed.stdin.close()  # type: ignore[union-attr]
        crashed.stdout.close()  # type: ignore[union-attr]
        live.communicate("", timeout=60)
    assert live.returncode == 0
    assert not set(live_info["names"]) & (namespaces() | links())


def test_no_root_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsUnavailable, match=r"uid 1000, not root.*need root.*CI runs them as root"):
        HostNetwork(["a"]).start()


def test_no_ip_command_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    monkeypatch.setattr(netns, "_IP_CANDIDATES", ())
    with pytest.raises(NetnsUnavailable, match=r"`ip` command is not installed.*need root"):
        HostNetwork(["a"]).start()


def test_kernel_refusal_says_why_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_ip = netns._ip_binary()
    fake = tmp_path / "ip"  # refuses `ip netns add` the way an unprivileged container does
    fake.write_text(f'#!/bin/sh\nif [ "$1 $2" = "netns add" ]; then\n'
                    f'  echo "mount --make-shared /run/netns failed: Operation not permitted" >&2; exit 1\nfi\n'
                    f'exec {real_ip} "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(netns.shutil, "which", lambda name: str(fake))
    net = HostNetwork(["a"])
    with pytest.raises(NetnsUnavailable, match=r"netns add .*Operation not permitted.*need root"):
        net.start()
    assert net.bridge and net.bridge not in links(), "the bridge built before the refusal is removed"
    assert net.leftovers() == []
