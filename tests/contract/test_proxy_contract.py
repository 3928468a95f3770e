"""The `ProxyRegistry` contract, run against `LocalEdge` (proxy.json) and `VelocityProxy` (velocity.toml).

`VelocityProxy` edits a copy of a Velocity default-style `velocity.toml` and reloads
through a small stand-in script that, like Velocity, refuses a config whose `try`
list or forced hosts name an unknown server (and can be told to fail outright).
"""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from uuid import uuid4

import pytest
import tomlkit

from services.adapters.edge_files import LocalEdge
from services.adapters.fake_edge import FakeProxy
from services.adapters.velocity import VelocityProxy
from services.ports import DriverError, ProxyRegistry, ownership_comment

ZONE = "play.example.com"

VELOCITY_TOML = """\
# Config version. Do not change this
config-version = "2.7"

# What port should the proxy be bound to? By default, we'll bind to all addresses on port 25565.
bind = "0.0.0.0:25565"

# What should be the MOTD? This gets displayed when the player adds your server to
# their server list. Only MiniMessage format is accepted.
motd = "<#09add3>A Velocity Server"

# What should we display for the maximum number of players?
show-max-players = 500

# Should we authenticate players with Mojang? By default, this is on.
online-mode = true

player-info-forwarding-mode = "modern"
forwarding-secret-file = "forwarding.secret"

[servers]
# Configure your servers here. Each key represents the server's name, and the value
# represents the IP address of the server to connect to.
lobby = "127.0.0.1:30066"
factions = "127.0.0.1:30067"
minigames = "127.0.0.1:30068"

# In what order we should try servers when a player logs in or is kicked from a server.
try = [
    "lobby"
]

[forced-hosts]
# Configure your forced hosts here.
"lobby.example.com" = [
    "lobby"
]
"factions.example.com" = [
    "factions"
]
"minigames.example.com" = [
    "minigames"
]

[advanced]
# How large a Minecraft packet has to be before we compress it. Setting this to zero will
# compress all packets, and setting it to -1 will disable compression entirely.
compression-threshold = 256
compression-level = -1
login-ratelimit = 3000

[query]
enabled = false
port = 25577
map = "Velocity"
show-plugins = false
"""

RELOAD_SCRIPT = """\
import pathlib, sys, tomllib

config = pathlib.Path(sys.argv[1])
with (config.parent / "reloads.log").open("a") as log:
    log.write("reload\\n")
if (config.parent / "refuse-reload").exists():
    print("velocity-reload: rcon: connection refused", file=sys.stderr)
    sys.exit(2)
doc = tomllib.loads(config.read_text())
servers = {name.lower() for name in doc.get("servers", {}) if name != "try"}
problems = [f"Fallback server {n} is not registered" for n in doc["servers"].get("try", []) if n.lower() not in servers]
for host, names in doc.get("forced-hosts", {}).items():
    problems += [f"Server {n} for forced host {host} does not exist" for n in names if n.lower() not in servers]
if problems:
    print("\\n".join(problems), file=sys.stderr)
    sys.exit(1)
"""


@dataclass
class Backend:
    """A `ProxyRegistry` under test and the means to meddle with what it stores."""

    name: str
    proxy: ProxyRegistry
    add_foreign: Callable[[str, str], None]  # a server entry someone else made
    add_foreign_forced: Callable[[str, list[str]], None]  # a forced host someone else made
    snapshot: Callable[[], bytes]  # everything the store holds, as bytes


def mark() -> str:
    return ownership_comment(uuid4())


def host(server: str) -> str:
    return f"{server}.{ZONE}"


def local_backend(tmp_path: Path) -> Backend:
    edge = LocalEdge(tmp_path / "edge")
    files = edge.edge

    def add_foreign(server: str, address: str) -> None:
        files.dir.mkdir(parents=True, exist_ok=True)
        files.proxy_path.write_text(json.dumps({**files.read_proxy(), server: address}))

    def add_foreign_forced(forced: str, servers: list[str]) -> None:
        files.dir.mkdir(parents=True, exist_ok=True)
        meta = files.read_proxy_meta()
        meta["forced_hosts"][forced] = {"servers": servers}
        files.meta_path.write_text(json.dumps(meta))

    def snapshot() -> bytes:
        return b"|".join(p.read_bytes() if p.exists() else b"" for p in (files.proxy_path, files.meta_path))

    return Backend("local", edge, add_foreign, add_foreign_forced, snapshot)


def velocity_dir(tmp_path: Path) -> Path:
    root = tmp_path / "velocity"
    root.mkdir()
    (root / "velocity.toml").write_text(VELOCITY_TOML)
    (root / "reload.py").write_text(RELOAD_SCRIPT)
    return root


def velocity_proxy(root: Path, **kwargs: object) -> VelocityProxy:
    config = root / "velocity.toml"
    kwargs.setdefault("reload_command", [sys.executable, str(root / "reload.py"), str(config)])
    return VelocityProxy(config, **kwargs)  # type: ignore[arg-type]


def reloads(root: Path) -> int:
    log = root / "reloads.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def velocity_backend(tmp_path: Path) -> Backend:
    root = velocity_dir(tmp_path)
    config = root / "velocity.toml"

    def edit(table: str, key: str, value: object) -> None:
        doc = tomlkit.parse(config.read_text())
        doc[table][key] = value
        config.write_text(doc.as_string())

    return Backend(
        "velocity",
        velocity_proxy(root),
        lambda server, address: edit("servers", server, address),
        lambda forced, servers: edit("forced-hosts", forced, servers),
        config.read_bytes,
    )


def fake_backend() -> Backend:
    proxy = FakeProxy()

    def add_foreign(server: str, address: str) -> None:
        proxy.map = replace(proxy.map, servers={**proxy.map.servers, server: address})

    def add_foreign_forced(forced: str, servers: list[str]) -> None:
        proxy.map = replace(proxy.map, forced={**proxy.map.forced, forced: servers})

    return Backend("fake", proxy, add_foreign, add_foreign_forced, lambda: repr(proxy.map).encode())


@pytest.fixture(params=["local", "velocity", "fake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "fake":
        return fake_backend()
    return local_backend(tmp_path) if request.param == "local" else velocity_backend(tmp_path)


# -- the contract, every registry --------------------------------------------------------------------


def test_register_is_idempotent_and_marked(backend: Backend) -> None:
    proxy, owner = backend.proxy, mark()
    assert proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner) == "203.0.113.7:30001"
    before = backend.snapshot()
    assert proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner) == "203.0.113.7:30001"
    assert backend.snapshot() == before
    assert proxy.list_servers()["alpha-1a2b3c4d"] == "203.0.113.7:30001"
    assert proxy.list_forced_hosts()[host("alpha-1a2b3c4d")] == ["alpha-1a2b3c4d"]
    assert proxy.list_owners() == {"alpha-1a2b3c4d": owner}


def test_register_updates_our_entry_and_nothing_else(backend: Backend) -> None:
    proxy, owner = backend.proxy, mark()
    backend.add_foreign("lobby", "127.0.0.1:30066")
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    proxy.register("beta-5e6f7a8b", "203.0.113.8:30002", None, mark())
    proxy.register("alpha-1a2b3c4d", "203.0.113.9:30005", host("alpha-1a2b3c4d"), owner)
    servers = proxy.list_servers()
    assert servers["alpha-1a2b3c4d"] == "203.0.113.9:30005"
    assert servers["beta-5e6f7a8b"] == "203.0.113.8:30002"
    assert servers["lobby"] == "127.0.0.1:30066"


def test_register_moves_our_forced_host(backend: Backend) -> None:
    proxy, owner = backend.proxy, mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", "alpha-1a2b3c4d.play.example.net", owner)
    forced = proxy.list_forced_hosts()
    assert host("alpha-1a2b3c4d") not in forced
    assert forced["alpha-1a2b3c4d.play.example.net"] == ["alpha-1a2b3c4d"]


@pytest.mark.parametrize("name", ["lobby", "LOBBY"])
def test_a_foreign_server_entry_is_never_changed(backend: Backend, name: str) -> None:
    backend.add_foreign("lobby", "127.0.0.1:30066")
    before = backend.snapshot()
    for attempt in (
        lambda: backend.proxy.register(name, "203.0.113.7:30001", None, mark()),
        lambda: backend.proxy.unregister(name, mark()),
    ):
        with pytest.raises(DriverError) as info:
            attempt()
        assert info.value.code == "record_not_ours"
    assert backend.snapshot() == before


def test_a_foreign_forced_host_is_never_changed(backend: Backend) -> None:
    backend.add_foreign_forced(host("alpha-1a2b3c4d"), ["lobby"])
    backend.add_foreign("lobby", "127.0.0.1:30066")
    before = backend.snapshot()
    with pytest.raises(DriverError) as info:
        backend.proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d").upper(), mark())
    assert info.value.code == "record_not_ours"
    assert "alpha-1a2b3c4d" not in backend.proxy.list_servers()
    assert backend.snapshot() == before


def test_another_instances_entry_is_not_ours(backend: Backend) -> None:
    backend.proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    with pytest.raises(DriverError) as info:
        backend.proxy.register("alpha-1a2b3c4d", "203.0.113.7:30009", None, mark())
    assert info.value.code == "record_not_ours"
    assert backend.proxy.list_servers()["alpha-1a2b3c4d"] == "203.0.113.7:30001"


def test_unregister_removes_ours_and_is_idempotent(backend: Backend) -> None:
    proxy, owner, other = backend.proxy, mark(), mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    proxy.register("beta-5e6f7a8b", "203.0.113.8:30002", host("beta-5e6f7a8b"), other)
    assert proxy.unregister("alpha-1a2b3c4d", owner) is True
    assert proxy.unregister("alpha-1a2b3c4d", owner) is False
    assert "alpha-1a2b3c4d" not in proxy.list_servers()
    assert host("alpha-1a2b3c4d") not in proxy.list_forced_hosts()
    assert proxy.list_owners() == {"beta-5e6f7a8b": other}
    assert proxy.list_forced_hosts()[host("beta-5e6f7a8b")] == ["beta-5e6f7a8b"]


def test_unregister_refuses_to_strand_a_foreign_forced_host(backend: Backend) -> None:
    owner = mark()
    backend.proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, owner)
    backend.add_foreign_forced("vanity.example.org", ["alpha-1a2b3c4d"])
    with pytest.raises(DriverError) as info:
        backend.proxy.unregister("alpha-1a2b3c4d", owner)
    assert info.value.code == "record_not_ours"
    assert "vanity.example.org" in info.value.message
    assert backend.proxy.list_servers()["alpha-1a2b3c4d"] == "203.0.113.7:30001"


@pytest.mark.parametrize("server", ["", "try", "has space", 'quo"te', "a]b"])
def test_unusable_names_are_refused(backend: Backend, server: str) -> None:
    with pytest.raises(DriverError) as info:
        backend.proxy.register(server, "203.0.113.7:30001", None, mark())
    assert info.value.code == "bad_proxy_entry"


def test_concurrent_registrations_all_land(backend: Backend) -> None:
    owners = {f"s{i:02d}-00000000": mark() for i in range(12)}

    def register(item: tuple[str, str]) -> str:
        server, owner = item
        return backend.proxy.register(server, f"10.0.0.1:{30000 + int(server[1:3])}", host(server), owner)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(register, owners.items()))
    assert {s: o for s, o in backend.proxy.list_owners().items() if s in owners} == owners
    assert all(host(s) in backend.proxy.list_forced_hosts() for s in owners)


# -- LocalEdge specifics ---------------------------------------------------------------------------


def test_local_proxy_json_keeps_its_contract_shape(tmp_path: Path) -> None:
    edge = LocalEdge(tmp_path / "edge")
    owner = mark()
    edge.register("alpha-1a2b3c4d", "127.0.0.1:30001", host("alpha-1a2b3c4d"), owner)
    assert json.loads(edge.edge.proxy_path.read_text()) == {"alpha-1a2b3c4d": "127.0.0.1:30001"}
    assert json.loads(edge.edge.meta_path.read_text()) == {
        "owners": {"alpha-1a2b3c4d": owner},
        "forced_hosts": {host("alpha-1a2b3c4d"): {"servers": ["alpha-1a2b3c4d"], "comment": owner}},
    }


def test_local_adopts_the_entries_earlier_versions_wrote(tmp_path: Path) -> None:
    """proxy.json with an owner claim and no forced host, as the driver's edge steps left it: still ours."""
    edge = LocalEdge(tmp_path / "edge")
    owner = mark()
    edge.edge.dir.mkdir(parents=True)
    edge.edge.proxy_path.write_text(json.dumps({"alpha-1a2b3c4d": "127.0.0.1:30001"}))
    edge.edge.meta_path.write_text(json.dumps({"owners": {"alpha-1a2b3c4d": owner}, "forced_hosts": {}}))
    assert edge.list_owners() == {"alpha-1a2b3c4d": owner}
    assert edge.register("alpha-1a2b3c4d", "127.0.0.1:30001", host("alpha-1a2b3c4d"), owner) == "127.0.0.1:30001"
    assert edge.list_forced_hosts() == {host("alpha-1a2b3c4d"): ["alpha-1a2b3c4d"]}
    assert edge.unregister("alpha-1a2b3c4d", owner) is True
    assert edge.list_servers() == {} and edge.list_owners() == {}


def test_local_a_stale_owner_claim_does_not_block(tmp_path: Path) -> None:
    edge = LocalEdge(tmp_path / "edge")
    owner = mark()
    edge.edge.dir.mkdir(parents=True)
    # A crash after the claim was written and before proxy.json was.
    edge.edge.meta_path.write_text(json.dumps({"owners": {"alpha-1a2b3c4d": owner}, "forced_hosts": {}}))
    assert edge.list_owners() == {}
    edge.register("alpha-1a2b3c4d", "127.0.0.1:30001", None, owner)
    assert edge.list_owners() == {"alpha-1a2b3c4d": owner}


def test_local_corrupt_sidecar_is_reported_and_kept(tmp_path: Path) -> None:
    edge = LocalEdge(tmp_path / "edge")
    edge.edge.dir.mkdir(parents=True)
    edge.edge.meta_path.write_text('{"owners": []}')
    with pytest.raises(DriverError) as info:
        edge.register("alpha-1a2b3c4d", "127.0.0.1:30001", None, mark())
    assert info.value.code == "edge_file_corrupt"
    assert edge.edge.meta_path.read_text() == '{"owners": []}'


# -- VelocityProxy specifics -------------------------------------------------------------------------


def test_velocity_round_trip_is_byte_for_byte(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proxy = velocity_proxy(root)
    config = root / "velocity.toml"
    owner = mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    text = config.read_text()
    assert f'alpha-1a2b3c4d = "203.0.113.7:30001" # {owner}\n' in text
    assert f'"{host("alpha-1a2b3c4d")}" = ["alpha-1a2b3c4d"] # {owner}\n' in text
    added = [line for line in text.splitlines() if owner in line]
    assert [line for line in text.splitlines() if line not in added] == VELOCITY_TOML.splitlines()
    assert proxy.unregister("alpha-1a2b3c4d", owner) is True
    assert config.read_text() == VELOCITY_TOML
    assert reloads(root) == 2


def test_velocity_reloads_only_on_change(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proxy, owner = velocity_proxy(root), mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    assert proxy.unregister("beta-5e6f7a8b", owner) is False
    assert reloads(root) == 1


def test_velocity_reads_the_servers_it_did_not_make(tmp_path: Path) -> None:
    proxy = velocity_proxy(velocity_dir(tmp_path))
    assert proxy.list_servers() == {
        "lobby": "127.0.0.1:30066",
        "factions": "127.0.0.1:30067",
        "minigames": "127.0.0.1:30068",
    }
    assert proxy.list_forced_hosts()["lobby.example.com"] == ["lobby"]
    assert proxy.list_owners() == {}


def test_velocity_failed_reload_restores_the_previous_file(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proxy, owner = velocity_proxy(root), mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, owner)
    before = (root / "velocity.toml").read_bytes()
    (root / "refuse-reload").touch()
    with pytest.raises(DriverError) as info:
        proxy.register("alpha-1a2b3c4d", "203.0.113.7:30009", host("alpha-1a2b3c4d"), owner)
    assert info.value.code == "proxy_reload_failed"
    assert "connection refused" in info.value.message
    assert (root / "velocity.toml").read_bytes() == before
    assert not list(root.glob("*.tmp")) and not list(root.glob(".velocity.toml.*.tmp"))
    (root / "refuse-reload").unlink()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30009", host("alpha-1a2b3c4d"), owner)
    assert proxy.list_servers()["alpha-1a2b3c4d"] == "203.0.113.7:30009"


def test_velocity_try_list_naming_our_server_blocks_removal(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proxy, owner = velocity_proxy(root), mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, owner)
    config = root / "velocity.toml"
    # An operator adds our server to the `try` list: removing it would make Velocity reject the file,
    # and the list is not ours to edit, so unregistering refuses.
    config.write_text(config.read_text().replace('    "lobby"\n]', '    "lobby", "alpha-1a2b3c4d"\n]', 1))
    before = config.read_bytes()
    with pytest.raises(DriverError) as info:
        proxy.unregister("alpha-1a2b3c4d", owner)
    assert info.value.code == "record_not_ours"
    assert "try" in info.value.message
    assert config.read_bytes() == before


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ([sys.executable, "-c", "import time; time.sleep(60)"], "timed out"),
        (["/nonexistent/velocity-reload"], "cannot run"),
        ([sys.executable, "-c", "import sys; sys.stdout.write('x' * 5000 + 'TAIL'); sys.exit(4)"], "TAIL"),
    ],
    ids=["timeout", "missing", "exit-code"],
)
def test_velocity_reload_failures(tmp_path: Path, command: list[str], words: str) -> None:
    root = velocity_dir(tmp_path)
    proxy = velocity_proxy(root, reload_command=command, timeout=1.0)
    with pytest.raises(DriverError) as info:
        proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    assert info.value.code == "proxy_reload_failed"
    assert words in info.value.message
    assert len(info.value.message) < 1200
    assert (root / "velocity.toml").read_text() == VELOCITY_TOML


def test_velocity_command_string_is_split_without_a_shell(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proof = root / "proof; touch injected"
    command = f"{sys.executable} -c 'import pathlib, sys; pathlib.Path(sys.argv[1]).touch()' '{proof}'"
    velocity_proxy(root, reload_command=command).register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    assert proof.exists()
    assert not (root / "injected").exists()


def test_velocity_without_reload_command_still_writes(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    proxy = velocity_proxy(root, reload_command=None)
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    assert proxy.list_servers()["alpha-1a2b3c4d"] == "203.0.113.7:30001"


def test_velocity_creates_missing_tables_and_keeps_the_file_mode(tmp_path: Path) -> None:
    root = tmp_path / "velocity"
    root.mkdir()
    config = root / "velocity.toml"
    config.write_text('bind = "0.0.0.0:25565"\n')
    config.chmod(0o600)
    proxy, owner = VelocityProxy(config), mark()
    proxy.register("alpha-1a2b3c4d", "203.0.113.7:30001", host("alpha-1a2b3c4d"), owner)
    doc = tomlkit.parse(config.read_text())
    assert doc["servers"]["alpha-1a2b3c4d"] == "203.0.113.7:30001"
    assert doc["forced-hosts"][host("alpha-1a2b3c4d")] == ["alpha-1a2b3c4d"]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert proxy.unregister("alpha-1a2b3c4d", owner) is True
    assert proxy.list_servers() == {}


@pytest.mark.parametrize("text", ["servers = [", 'servers = "not a table"\n'])
def test_velocity_invalid_config_is_reported_and_kept(tmp_path: Path, text: str) -> None:
    root = tmp_path / "velocity"
    root.mkdir()
    config = root / "velocity.toml"
    config.write_text(text)
    with pytest.raises(DriverError) as info:
        VelocityProxy(config).register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    assert info.value.code == "proxy_config_invalid"
    assert config.read_text() == text


def test_velocity_missing_config(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as info:
        VelocityProxy(tmp_path / "velocity.toml").list_servers()
    assert info.value.code == "edge_io_error"


def test_velocity_a_config_velocity_rejects_is_rolled_back(tmp_path: Path) -> None:
    root = velocity_dir(tmp_path)
    config = root / "velocity.toml"
    # A hand edit Velocity would refuse (a forced host naming no server), waiting for the next reload.
    config.write_text(config.read_text().replace("[advanced]", '"typo.example.com" = ["lobbby"]\n\n[advanced]'))
    before = config.read_bytes()
    with pytest.raises(DriverError) as info:
        velocity_proxy(root).register("alpha-1a2b3c4d", "203.0.113.7:30001", None, mark())
    assert info.value.code == "proxy_reload_failed"
    assert "lobbby" in info.value.message
    assert config.read_bytes() == before
