"""Real, separate hosts on this one machine for tests: Linux network namespaces joined by a bridge.

    with HostNetwork(["a", "b"]) as net:
        agent = net["a"].run([sys.executable, "-m", "api.cli", "agent", "--host", net["a"].address])
        ...                      # the control plane (this process) reaches it at net["a"].address
        net["a"].disconnect()    # the host drops off the network; its processes keep running
        net["a"].reconnect()

Layout of one run (a random 4-hex run id `<run>`, a free subnet 10.X.Y.0/24):

    root namespace: bridge zlhbr<run> with 10.X.Y.1/24 (`net.gateway`: where hosts reach the control plane)
    host i:         namespace zlh-<run>-<name>, its own loopback (up) and eth0 with 10.X.Y.(i+2)/24,
                    default route via the gateway; eth0's veth peer zlhv<run><i> is a port of the bridge

Every host has its own ports, its own 127.0.0.1 and its own routes. Traffic root <-> host is local
delivery on the bridge and host <-> host is bridged, so neither needs ip_forward. Hosts cannot reach
beyond the bridge (no NAT).

Parallel runs (pytest-xdist, several CI jobs) never collide: run ids and subnets are allocated under a
machine-wide lock (/run/zlh-netns/.lock) and each run holds a flock on /run/zlh-netns/<run>.lock for its
lifetime. `cleanup_stale()` (also called on every start) removes namespaces, links and processes of runs
whose lock is free, i.e. whose process died without cleaning up; it never touches a live run.

This needs root (CI runs these tests as root). Without it, or without `ip`, or if the kernel refuses,
`NetnsUnavailable` says exactly why: the tests fail loudly, never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

STATE_DIR = Path("/run/zlh-netns")
ETC_NETNS = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc/*
NETNS_PREFIX = "zlh-"
BRIDGE_PREFIX = "zlhbr"
VETH_PREFIX = "zlhv"
IFNAMSIZ = 15  # the kernel's limit on interface names (IFNAMSIZ - 1 usable characters)
MAX_HOSTS = 99  # veth names zlhv<run><i> stay within IFNAMSIZ; addresses .2 .. .100

_NETNS_RE = re.compile(r"^zlh-([0-9a-f]{4})-")
_LINK_RE = re.compile(r"^(?:zlhbr([0-9a-f]{4})|zlhv([0-9a-f]{4})\d{1,2})$")
_HOST_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?$")
_IP_CANDIDATES = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")  # root's PATH has sbin, others' may not
_NEEDS_ROOT = "These tests need root with network-namespace, veth and bridge support (CI runs them as root)."

# One process per probe: connect to each "address:port" argument, print {"address:port": null | "error"}.
_PROBE = """
import json, socket, sys
timeout, results = float(sys.argv[1]), {}
for target in sys.argv[2:]:
    address, _, port = target.rpartition(":")
    try:
        socket.create_connection((address, int(port)), timeout=timeout).close()
        results[target] = None
    except OSError as e:
        results[target] = f"{type(e).__name__}: {e}"
print(json.dumps(results), flush=True)
"""

# Verification listener: checks its own loopback, listens on the host's address, prints the port, waits.
_LISTEN = """
import socket, sys
lo = socket.socket(); lo.bind(("127.0.0.1", 0)); lo.listen(1)
socket.create_connection(lo.getsockname(), timeout=5).close()
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


class NetnsError(RuntimeError):
    """The host network could not be built, verified or removed."""


class NetnsUnavailable(NetnsError):
    """Namespaces cannot be made on this machine (not root, no `ip`, or the kernel refused)."""


def _ip_binary() -> str:
    """Preflight: root and iproute2's `ip`, or `NetnsUnavailable` saying which is missing."""
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"cannot create network namespaces: running as uid {os.geteuid()}, not root. "
                               + _NEEDS_ROOT)
    ip = shutil.which("ip") or next((p for p in _IP_CANDIDATES if os.access(p, os.X_OK)), None)
    if ip is None:
        raise NetnsUnavailable("cannot create network namespaces: iproute2's `ip` command is not installed "
                               "(apt-get install iproute2). " + _NEEDS_ROOT)
    return ip


def _ip(ip: str, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([ip, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _ip_json(ip: str, *args: str) -> list[dict[str, Any]]:
    out = _ip(ip, "-j", *args).stdout.strip()
    return json.loads(out) if out else []


def _setup(ip: str, *args: str) -> None:
    """A setup step; the kernel refusing it means namespaces are unavailable here."""
    proc = _ip(ip, *args, check=False)
    if proc.returncode != 0:
        raise NetnsUnavailable(f"cannot build test hosts: `ip {' '.join(args)}` failed: {proc.stderr.strip()} "
                               f"(exit {proc.returncode}). " + _NEEDS_ROOT)


def _netns_names(ip: str) -> list[str]:
    return [entry["name"] for entry in _ip_json(ip, "netns", "list")]


def _link_names(ip: str) -> list[str]:
    return [entry["ifname"] for entry in _ip_json(ip, "link", "show")]


def _netns_pids(ip: str, netns: str) -> list[int]:
    proc = _ip(ip, "netns", "pids", netns, check=False)
    return [int(line) for line in proc.stdout.split() if line.isdigit()]


def _kill_netns_processes(ip: str, netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in `netns` until none is left (they may fork meanwhile)."""
    deadline = time.monotonic() + timeout
    while pids := _netns_pids(ip, netns):
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {netns} survived SIGKILL for {timeout}s")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


def _delete_link(ip: str, name: str) -> None:
    proc = _ip(ip, "link", "del", name, check=False)
    if proc.returncode != 0 and name in _link_names(ip):
        raise NetnsError(f"could not delete link {name}: {proc.stderr.strip()}")


def _delete_netns(ip: str, netns: str) -> None:
    _kill_netns_processes(ip, netns)
    proc = _ip(ip, "netns", "del", netns, check=False)
    if proc.returncode != 0 and netns in _netns_names(ip):
        raise NetnsError(f"could not delete namespace {netns}: {proc.stderr.strip()}")


def _netns_etc_dirs() -> list[str]:
    return [p.name for p in ETC_NETNS.glob(f"{NETNS_PREFIX}*") if _NETNS_RE.match(p.name)]


def _run_of(name: str) -> str | None:
    if m := _NETNS_RE.match(name):
        return m.group(1)
    if m := _LINK_RE.match(name):
        return m.group(1) or m.group(2)
    return None


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialises allocation and stale cleanup across every process on the machine."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _owner_alive(run: str) -> bool:
    """Whether the run's owner still holds its lock (the kernel drops it when the owner dies)."""
    path = STATE_DIR / f"{run}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _cleanup_stale_locked(ip: str) -> list[str]:
    namespaces = [n for n in _netns_names(ip) if _run_of(n)]
    etc_dirs = _netns_etc_dirs()
    links = [n for n in _link_names(ip) if _run_of(n)]
    lockfiles = [p for p in STATE_DIR.glob("*.lock") if re.fullmatch(r"[0-9a-f]{4}", p.stem)]
    runs = {_run_of(n) for n in namespaces + links + etc_dirs} | {p.stem for p in lockfiles}
    stale = {run for run in runs if run and not _owner_alive(run)}
    removed: list[str] = []
    for netns in namespaces:
        if _run_of(netns) in stale:
            _delete_netns(ip, netns)
            removed.append(netns)
    # Veths first (deleting one end removes its peer), then bridges.
    for link in sorted((n for n in links if _run_of(n) in stale), key=lambda n: n.startswith(BRIDGE_PREFIX)):
        _delete_link(ip, link)
        removed.append(link)
    for name in etc_dirs:
        if _run_of(name) in stale:
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
            removed.append(str(ETC_NETNS / name))
    for run in stale:
        (STATE_DIR / f"{run}.lock").unlink(missing_ok=True)
    return removed


def cleanup_stale() -> list[str]:
    """Remove the namespaces, links and processes left by runs that died (lock free); returns their names.

    Live runs, in this process or any other, are left alone, whenever they started.
    """
    ip = _ip_binary()
    with _machine_lock():
        return _cleanup_stale_locked(ip)


def _probe(command: list[str], targets: Sequence[tuple[str, int]], timeout: float) -> dict[str, str | None]:
    proc = subprocess.run([*command, sys.executable, "-c", _PROBE, str(timeout), *(f"{a}:{p}" for a, p in targets)],
                          capture_output=True, text=True, timeout=timeout * len(targets) + 30)
    if proc.returncode != 0:
        raise NetnsError(f"probe {command} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def connect_error(address: str, port: int, timeout: float = 1.0) -> str | None:
    """From this (the root) namespace: None if a TCP connection to address:port succeeds, else the error."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None


@dataclass(eq=False)
class Host:
    """One host: a network namespace with its own loopback and eth0 on the bridge."""

    name: str
    netns: str
    address: str
    veth: str  # the root-namespace end, a port of the bridge
    gateway: str
    ip: str = field(repr=False)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def command(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """`argv` wrapped to run inside this host's namespace."""
        return [self.ip, "netns", "exec", self.netns, *map(os.fspath, argv)]

    def run(self, argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
            **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside this host (`ip netns exec`); the process is killed on cleanup.

        `ip netns exec` execs `argv` in place, so the Popen's pid is the program's own pid. Returns once
        that pid is inside the namespace (or has exited), so `pids()` and `kill_all()` always see it.
        """
        proc = subprocess.Popen(self.command(argv), env=env, **popen_kwargs)
        self.processes.append(proc)
        netns_inode = os.stat(f"/run/netns/{self.netns}").st_ino
        deadline = time.monotonic() + 10
        while proc.poll() is None:
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == netns_inode:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise NetnsError(f"{argv!r} did not enter namespace {self.netns} within 10s")
            time.sleep(0.002)
        return proc

    def call(self, argv: Sequence[str | os.PathLike[str]], timeout: float = 60,
             **run_kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside this host to completion, output captured as text."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout, **run_kwargs)

    def connect_error(self, address: str, port: int, timeout: float = 1.0) -> str | None:
        """From inside this host: None if a TCP connection to address:port succeeds, else the error."""
        return _probe(self.command([]), [(address, port)], timeout)[f"{address}:{port}"]

    def can_connect(self, address: str, port: int, timeout: float = 1.0) -> bool:
        return self.connect_error(address, port, timeout) is None

    def pids(self) -> list[int]:
        """Every process in this host's namespace, whoever started it."""
        return _netns_pids(self.ip, self.netns)

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the namespace (tracked or not) and reap the ones started by `run`."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        _kill_netns_processes(self.ip, self.netns, timeout)
        for proc in self.processes:
            proc.wait(timeout=timeout)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.processes.clear()

    def disconnect(self) -> None:
        """Cable pulled: the bridge port goes down, so nothing reaches the host and it reaches nothing.

        Its processes, addresses and routes stay; eth0 inside sees carrier loss.
        """
        _ip(self.ip, "link", "set", self.veth, "down")

    def reconnect(self) -> None:
        _ip(self.ip, "link", "set", self.veth, "up")
        # Carrier loss keeps the default route (marked linkdown); restore it should anything have dropped it.
        _ip(self.ip, "-n", self.netns, "route", "replace", "default", "via", self.gateway, "dev", "eth0")

    @property
    def connected(self) -> bool:
        (link,) = _ip_json(self.ip, "link", "show", self.veth)
        return "UP" in link.get("flags", [])


class HostNetwork:
    """N hosts on one bridge; a context manager (or `start()` / `close()`) that always cleans up.

    `names` are short host names ([a-z0-9-], at most 20 characters): `net["a"]`, `net.hosts`.
    With `verify` (the default) `start()` proves routes and TCP root <-> host, host <-> host and each
    host's own loopback, so a machine that drops bridged traffic fails here with a diagnosis.
    """

    def __init__(self, names: Sequence[str] = ("a", "b"), *, verify: bool = True) -> None:
        names = list(names)
        if not names or len(names) > MAX_HOSTS:
            raise ValueError(f"between 1 and {MAX_HOSTS} hosts, not {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"host names must be unique: {names}")
        for name in names:
            if not _HOST_NAME_RE.match(name):
                raise ValueError(f"host name {name!r}: use 1-20 of [a-z0-9-], not starting or ending with '-'")
        self.names = names
        self.verify_on_start = verify
        self.hosts: dict[str, Host] = {}
        self.run_id = ""
        self.bridge = ""
        self.subnet = ipaddress.IPv4Network("0.0.0.0/32")
        self.gateway = ""
        self._ip = ""
        self._lock_fd: int | None = None
        self._closed = False

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def __enter__(self) -> HostNetwork:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        except Exception as error:
            if exc is None:
                raise
            exc.add_note(f"and cleaning up the host network failed too: {error}")

    # --- setup ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._ip = _ip_binary()
        try:
            with _machine_lock():
                _cleanup_stale_locked(self._ip)
                self._claim_run()
                self._claim_subnet()
                self._build_bridge()  # inside the lock: its route now marks the subnet as used
            for index, name in enumerate(self.names):
                self._build_host(index, name)
            if self.verify_on_start:
                self.verify()
        except BaseException as error:
            try:
                self.close()
            except Exception as cleanup_error:
                error.add_note(f"and cleaning up the half-built host network failed too: {cleanup_error}")
            raise

    def _claim_run(self) -> None:
        taken = {_run_of(n) for n in _netns_names(self._ip) + _link_names(self._ip) + _netns_etc_dirs()}
        taken |= {p.stem for p in STATE_DIR.glob("*.lock")}
        rng = random.SystemRandom()
        for _ in range(1000):
            run = f"{rng.randrange(16**4):04x}"
            if run not in taken:
                break
        else:
            raise NetnsError(f"no free run id; {len(taken)} runs exist under {STATE_DIR}")
        fd = os.open(STATE_DIR / f"{run}.lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd, self.run_id, self.bridge = fd, run, f"{BRIDGE_PREFIX}{run}"

    def _claim_subnet(self) -> None:
        used: list[ipaddress.IPv4Network] = []
        for route in _ip_json(self._ip, "-4", "route", "show"):
            if route.get("dst", "default") != "default":
                used.append(ipaddress.IPv4Network(route["dst"], strict=False))
        for link in _ip_json(self._ip, "-4", "addr", "show"):
            for info in link.get("addr_info", []):
                used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
        for path in STATE_DIR.glob("*.lock"):
            with contextlib.suppress(ValueError, KeyError, OSError):
                used.append(ipaddress.IPv4Network(json.loads(path.read_text())["subnet"]))
        with contextlib.suppress(OSError):  # a resolver reached via the default route, e.g. 10.255.255.53
            for line in Path("/etc/resolv.conf").read_text().splitlines():
                with contextlib.suppress(IndexError, ValueError):
                    if line.split()[0] == "nameserver":
                        used.append(ipaddress.IPv4Network(line.split()[1]))
        rng = random.SystemRandom()
        for _ in range(500):
            candidate = ipaddress.IPv4Network(f"10.{rng.randrange(1, 255)}.{rng.randrange(256)}.0/24")
            if not any(candidate.overlaps(net) for net in used):
                break
        else:
            raise NetnsError(f"no free 10.X.Y.0/24 subnet: routes and addresses here cover 10.0.0.0/8 ({used})")
        self.subnet, self.gateway = candidate, str(candidate.network_address + 1)
        assert self._lock_fd is not None
        os.write(self._lock_fd, json.dumps({"run": self.run_id, "pid": os.getpid(), "started": time.time(),
                                            "subnet": str(candidate), "argv": sys.argv}).encode())

    def _build_bridge(self) -> None:
        ip = self._ip
        _setup(ip, "link", "add", self.bridge, "type", "bridge", "stp_state", "0")
        _setup(ip, "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _setup(ip, "link", "set", self.bridge, "up")

    def _address(self, index: int) -> str:
        return str(self.subnet.network_address + index + 2)

    def _write_etc(self, netns: str) -> None:
        """Per-host /etc/hosts (every host's name, `gateway`) and a resolv.conf without nameservers.

        Nothing answers DNS beyond the bridge: with the machine's resolver every lookup (even the reverse
        lookup in `http.server` start-up) would hang for its full timeout. With none configured, glibc asks
        the host's own 127.0.0.1:53 and fails at once; names of the test hosts resolve from /etc/hosts.
        """
        directory = ETC_NETNS / netns
        directory.mkdir(parents=True, exist_ok=True)
        names = "".join(f"{self._address(i)}\t{name}\n" for i, name in enumerate(self.names))
        (directory / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{self.gateway}\tgateway\n{names}")
        (directory / "resolv.conf").write_text("# zlh test host: no DNS beyond the bridge\n"
                                              "options timeout:1 attempts:1\n")

    def _build_host(self, index: int, name: str) -> None:
        ip, netns, veth = self._ip, f"{NETNS_PREFIX}{self.run_id}-{name}", f"{VETH_PREFIX}{self.run_id}{index}"
        assert len(veth) <= IFNAMSIZ and len(self.bridge) <= IFNAMSIZ
        address = self._address(index)
        self._write_etc(netns)
        _setup(ip, "netns", "add", netns)
        self.hosts[name] = Host(name, netns, address, veth, self.gateway, ip)
        _setup(ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _setup(ip, "link", "set", veth, "master", self.bridge)
        _setup(ip, "link", "set", veth, "up")
        _setup(ip, "-n", netns, "link", "set", "lo", "up")
        _setup(ip, "-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _setup(ip, "-n", netns, "link", "set", "eth0", "up")
        _setup(ip, "-n", netns, "route", "add", "default", "via", self.gateway, "dev", "eth0")

    # --- verification --------------------------------------------------------------------------------

    def verify(self, timeout: float = 5.0) -> None:
        """Routes, then TCP: root -> every host, every host -> every other host and the gateway, loopbacks."""
        problems: list[str] = []
        for host in self:
            (route,) = _ip_json(self._ip, "route", "get", host.address)
            if route.get("dev") != self.bridge:
                problems.append(f"root namespace routes {host.address} via {route.get('dev')}, not {self.bridge}")
            for target in [self.gateway, *(other.address for other in self if other is not host)]:
                (route,) = _ip_json(self._ip, "-n", host.netns, "route", "get", target)
                if route.get("dev") != "eth0":
                    problems.append(f"{host.name} routes {target} via {route.get('dev')}, not eth0")
        if problems:
            raise NetnsError("host network routing is wrong: " + "; ".join(problems))

        listeners: dict[str, tuple[subprocess.Popen[str], int]] = {}
        with socket.socket() as gateway_listener:
            gateway_listener.bind((self.gateway, 0))
            gateway_listener.listen(64)  # the kernel completes handshakes without accept()
            gateway_port = gateway_listener.getsockname()[1]
            try:
                for host in self:
                    proc = host.run([sys.executable, "-c", _LISTEN, host.address], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    listeners[host.name] = (proc, 0)
                deadline = time.monotonic() + 30
                for name, (proc, _) in listeners.items():
                    assert proc.stdout is not None
                    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                    line = proc.stdout.readline() if ready else ""
                    if not line.strip().isdigit():
                        proc.kill()
                        _, err = proc.communicate()
                        raise NetnsError(f"verification listener in host {name} did not start "
                                         f"(its own 127.0.0.1 or its address {self[name].address} failed): "
                                         f"{err.strip()[-2000:]}")
                    listeners[name] = (proc, int(line))
                for host in self:
                    error = connect_error(host.address, listeners[host.name][1], timeout)
                    if error:
                        problems.append(f"root -> {host.name} {host.address}: {error}")
                for host in self:
                    targets = [(self.gateway, gateway_port)]
                    targets += [(o.address, listeners[o.name][1]) for o in self if o is not host]
                    for target, error in _probe(host.command([]), targets, timeout).items():
                        if error:
                            problems.append(f"{host.name} -> {target}: {error}")
            finally:
                for name, (proc, _) in listeners.items():
                    if proc.returncode is None:
                        proc.kill()
                        proc.communicate()
                    self[name].processes.remove(proc)
        if problems:
            raise NetnsError("host network does not carry TCP: " + "; ".join(problems) + self._diagnosis())

    def _diagnosis(self) -> str:
        try:
            bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip()
        except OSError:
            bridge_nf = "absent (br_netfilter not loaded)"
        return (f". net.bridge.bridge-nf-call-iptables is {bridge_nf}: when it is 1, bridged host <-> host "
                "traffic goes through iptables FORWARD, which Docker sets to DROP; allow it with "
                f"`iptables -I FORWARD -i {self.bridge} -o {self.bridge} -j ACCEPT` or set the sysctl to 0. "
                "A firewall on INPUT can also drop host -> root traffic.")

    # --- teardown ------------------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """This run's namespaces and links that still exist."""
        if not self.run_id or not self._ip:
            return []
        names = _netns_names(self._ip) + _link_names(self._ip)
        left = [n for n in names if _run_of(n) == self.run_id]
        return left + [str(ETC_NETNS / n) for n in _netns_etc_dirs() if _run_of(n) == self.run_id]

    def close(self) -> None:
        """Kill every process in every host, delete namespaces, veths and the bridge; idempotent.

        Raises `NetnsError` naming anything left behind (a later `cleanup_stale()` removes it).
        """
        if self._closed or not self._ip:
            return
        errors: list[str] = []
        for host in self:
            try:
                host.kill_all()
            except Exception as e:
                errors.append(f"killing processes in {host.netns}: {e}")
        steps = [(_delete_netns, host.netns) for host in self] + [(_delete_link, host.veth) for host in self]
        if self.bridge:
            steps.append((_delete_link, self.bridge))
        for delete, name in steps:
            try:
                delete(self._ip, name)
            except Exception as e:
                errors.append(str(e))
        for name in self.names:
            if self.run_id:
                shutil.rmtree(ETC_NETNS / f"{NETNS_PREFIX}{self.run_id}-{name}", ignore_errors=True)
        left = self.leftovers()
        if left:
            errors.append(f"still present: {left}")
        self._closed = True
        if self._lock_fd is not None:
            if not left:  # else keep the lock file so cleanup_stale() finds the run once we are gone
                with _machine_lock():
                    (STATE_DIR / f"{self.run_id}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        if errors:
            raise NetnsError(f"cleaning up host network {self.run_id}: " + "; ".join(errors))
