"""The node agent runs any template the control plane sends: install steps and their cache, the console,
readiness checks, graceful stop, config files, Paper's download and checksum, and code-server.

Most tests use small templates of their own (a Python line server, `ECHO`), so each part of the
machinery is seen on its own and quickly; `paper` and `node` are the shipped templates. Paper is
never claimed to run here (no Paper jar is reachable): its install downloads a stand-in file from a
local HTTP server to exercise the download and the checksum, and the test sees Java itself start
and refuse that file.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from domain.templates import Template
from services.agent import installs
from services.agent.driver import LocalDriver
from services.infrastructure.templates import TemplateCatalogue, shipped_catalogue
from services.ports import DriverError, InstanceSpec
from tests.contract.test_driver_contract import eventually, live_in, local_driver
from tests.real_servers import install

pytestmark = pytest.mark.real_services  # real processes, a real install cache, Java, code-server

ECHO_SERVER = r'''
import os, signal, socket, subprocess, sys
stubborn = os.environ.get("STUBBORN") == "true"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen(["sleep", "1000"])  # a child in the server's process group
listener = socket.socket()
listener.bind((os.environ["BIND"], int(os.environ["PORT"])))
listener.listen()
print("echo ready on", os.environ["PORT"], flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "quit" and not stubborn:
        print("bye", flush=True)
        sys.exit(0)
    print("said:", command, flush=True)
'''

ECHO = f"""
kind = "game"
description = "a line server for the tests"

[resources]
memory_mb = 64
cpus = 0.1
disk_mb = 10

[variables.greeting]
type = "string"
default = "hello"

[variables.stubborn]
type = "bool"
default = false

[[install]]
write = "echo.py"
content = '''{ECHO_SERVER}'''

[[install]]
run = ["sh", "-c", "echo installed >> ${{downloads}}/echo-installs"]

[start]
command = ["${{system_python}}", "-u", "${{cache}}/echo.py"]
env = {{ PORT = "${{port}}", BIND = "${{bind}}", STUBBORN = "${{stubborn}}" }}

[stop]
command = "quit"
timeout = 1

[ready]
check = "console"
pattern = "^echo ready on \\\\d+$"
timeout = 20

[[files]]
path = "greeting.txt"
content = "${{greeting}} on ${{port}}\\n"

[[files]]
path = "port.txt"
when = "always"
content = "${{port}}\\n"
"""


def echo_template(**changes: Any) -> Template:
    data = tomllib.loads(ECHO)
    data.update(changes)
    return Template.from_dict("echo", data)


def echo_spec(template: Template | None = None, **variables: Any) -> InstanceSpec:
    template = template or echo_template()
    resolved = {"greeting": "hello", "stubborn": False, **variables}
    iid = uuid4()
    return InstanceSpec(iid, "game", "echo", f"echo-{iid.hex[:8]}", resolved, template)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalDriver]:
    """A node with a cache of its own (these tests count installs)."""
    with local_driver(tmp_path / "data") as driver:
        driver.installer = installs.Installer(tmp_path / "cache", driver.launcher)
        yield driver


def start(node: LocalDriver, spec: InstanceSpec, timeout: float = 20.0) -> tuple[int, int]:
    port = node.allocate_port(spec)
    node.create_directory(spec)
    node.install(spec)
    pid = node.start_process(spec, port)
    node.wait_connectable(spec, port, timeout)
    return port, pid


# -- install steps and the cache ----------------------------------------------------------------------


def test_an_install_runs_once_per_node_even_when_asked_at_once(node: LocalDriver, tmp_path: Path) -> None:
    other = LocalDriver(tmp_path / "other-data")  # a second agent sharing the cache
    other.installer = installs.Installer(tmp_path / "cache", other.launcher)
    specs = [echo_spec(greeting=f"g{n}") for n in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: p[0].install(p[1]), [(node, specs[0]), (other, specs[1]),
                                                               (node, specs[2]), (other, specs[3])]))
    assert len({r["cache"] for r in results}) == 1
    assert sorted(r["reused"] for r in results) == [False, True, True, True]
    assert (tmp_path / "cache" / "downloads" / "echo-installs").read_text() == "installed\n"
    cache = tmp_path / "cache" / "templates" / results[0]["cache"]
    assert (cache / ".zlh-installed").is_file() and (cache / "echo.py").stat().st_mode & 0o777 == 0o644
    log = (tmp_path / "cache" / "templates" / f"{results[0]['cache']}.log").read_text()
    assert "step 1/2: write echo.py" in log and "step 2/2: run sh -c" in log


def test_a_failed_install_step_fails_the_install_and_the_next_one_starts_afresh(node: LocalDriver,
                                                                                tmp_path: Path) -> None:
    flaky = tmp_path / "flaky"
    data = tomllib.loads(ECHO)
    data["install"].append({"run": ["sh", "-c", f"echo step output; test -e {flaky}"]})
    spec = echo_spec(Template.from_dict("echo", data))
    with pytest.raises(DriverError) as info:
        node.install(spec)
    assert info.value.code == "install_failed"
    assert "install step 3 of template echo" in info.value.message and "exited with status 1" in info.value.message
    assert "step output" in info.value.message  # the end of the install log
    port = node.allocate_port(spec)
    node.create_directory(spec)
    with pytest.raises(DriverError) as info:
        node.start_process(spec, port)
    assert info.value.code == "not_installed"
    flaky.touch()
    assert node.install(spec)["reused"] is False
    assert (tmp_path / "cache" / "downloads" / "echo-installs").read_text() == "installed\ninstalled\n"
    node.start_process(spec, port)
    node.wait_connectable(spec, port, 20)


def test_missing_debian_packages_are_named_when_the_agent_cannot_install_them(
        node: LocalDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tomllib.loads(ECHO)
    data["install"] = [{"packages": ["coreutils", "zlh-no-such-package"]}]
    spec = echo_spec(Template.from_dict("echo", data))
    monkeypatch.setattr(installs.os, "geteuid", lambda: 1000)  # as an agent without root would be
    with pytest.raises(DriverError) as info:
        node.install(spec)
    assert info.value.code == "install_failed"
    assert info.value.message.endswith("cannot install them (it needs apt-get and root): zlh-no-such-package")
    data["install"] = [{"packages": ["coreutils"]}, *tomllib.loads(ECHO)["install"]]
    assert node.install(echo_spec(Template.from_dict("echo", data)))["reused"] is False  # present: nothing to do


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over `tmp_path/www`: `(base URL, folder)`."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www
    server.shutdown()
    thread.join()
    server.server_close()


def test_a_download_is_kept_only_when_its_sha256_matches(node: LocalDriver, file_server: tuple[str, Path],
                                                         tmp_path: Path) -> None:
    base, www = file_server
    (www / "tool.bin").write_bytes(b"the real tool")
    good = hashlib.sha256(b"the real tool").hexdigest()
    data = tomllib.loads(ECHO)
    for sha, url in ((hashlib.sha256(b"something else").hexdigest(), f"{base}/tool.bin"),
                     (good, f"file://{www}/tool.bin")):
        data["install"] = [{"download": url, "sha256": sha, "to": "bin/tool.bin"}]
        spec = echo_spec(Template.from_dict("echo", data))
        if sha != good:
            with pytest.raises(DriverError) as info:
                node.install(spec)
            assert info.value.code == "checksum_mismatch"
            assert "does not match its sha256" in info.value.message and base not in info.value.message
            assert not list((tmp_path / "cache").rglob("tool.bin*"))  # nothing kept, not even a part
        else:
            cache = tmp_path / "cache" / "templates" / node.install(spec)["cache"]
            assert (cache / "bin" / "tool.bin").read_bytes() == b"the real tool"


# -- the console, readiness, stop -----------------------------------------------------------------------


def test_console_readiness_and_the_console_is_the_servers_stdin_and_stdout(node: LocalDriver) -> None:
    spec = echo_spec()
    port, _pid = start(node, spec)
    node.send_console(spec, "say hi")
    eventually(lambda: "said: say hi\n" in node.console_log(spec), what="the echo")
    assert node.console_log(spec).startswith(f"echo ready on {port}\n")  # nothing but the server's output
    node.stop_process(spec)
    assert node.console_log(spec).endswith("bye\n")  # the stop command went to its console
    never = echo_spec(echo_template(ready={"check": "console", "pattern": "^never$"}))
    never_port = node.allocate_port(never)
    node.create_directory(never)
    node.install(never)
    node.start_process(never, never_port)
    with pytest.raises(DriverError) as info:
        node.wait_connectable(never, never_port, 0.5)
    assert info.value.code == "not_connectable" and "no console line matches" in info.value.message


def test_a_server_that_ignores_stop_and_sigterm_is_killed_with_its_process_group(node: LocalDriver) -> None:
    spec = echo_spec(stubborn=True)
    port, _pid = start(node, spec)
    eventually(lambda: len(live_in(node.instance_dir(spec))) == 2, what="the server and its child")
    node.stop_process(spec, timeout=0.5)  # `quit`, then SIGTERM, then SIGKILL, the template's 1 s apart
    assert not node.is_running(spec, port)
    eventually(lambda: not live_in(node.instance_dir(spec)), what="the child to be gone too")
    assert "said: quit" in node.console_log(spec)  # it did get the stop command


def test_config_files_are_written_when_missing_or_always(node: LocalDriver) -> None:
    spec = echo_spec(greeting="howdy")
    port, _pid = start(node, spec)
    assert node.read_file(spec, "greeting.txt") == f"howdy on {port}\n".encode()
    node.write_file(spec, "greeting.txt", b"mine\n")
    node.write_file(spec, "port.txt", b"mine\n")
    node.stop_process(spec)
    node.start_process(spec, port)
    node.wait_connectable(spec, port, 20)
    assert node.read_file(spec, "greeting.txt") == b"mine\n"  # `missing`: the customer's edit stays
    assert node.read_file(spec, "port.txt") == f"{port}\n".encode()  # `always`: rewritten at every start


def test_a_server_gets_none_of_the_agents_environment(node: LocalDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZLH_AGENT_SECRET", "the-agents-secret")
    monkeypatch.setenv("SOME_OPERATOR_VARIABLE", "operator")
    spec = echo_spec()
    _port, pid = start(node, spec)
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"the-agents-secret" not in environ and b"SOME_OPERATOR_VARIABLE" not in environ
    assert b"PORT=" in environ and f"HOME={node.runtime_dir(spec)}/home".encode() in environ


def test_a_server_that_exits_while_starting_is_process_exited_with_its_console(node: LocalDriver) -> None:
    spec = echo_spec(echo_template(start={"command": ["${system_python}", "-c", "print('cannot start: no map')"]}))
    port = node.allocate_port(spec)
    node.create_directory(spec)
    node.install(spec)
    node.start_process(spec, port)
    with pytest.raises(DriverError) as info:
        node.wait_connectable(spec, port, 20)
    assert info.value.code == "process_exited" and "cannot start: no map" in info.value.message


# -- paper: download, checksum, Java ----------------------------------------------------------------


def paper_spec(folder: Path, url: str, sha: str, **variables: Any) -> InstanceSpec:
    folder.mkdir(exist_ok=True)
    (folder / "paper.toml").write_text(
        f'extends = "paper"\n[variables.jar_url]\ndefault = "{url}"\n[variables.jar_sha256]\ndefault = "{sha}"\n')
    catalogue = TemplateCatalogue.load(folder)
    iid = uuid4()
    return catalogue.spec(iid, "game", "paper", f"paper-{iid.hex[:8]}", catalogue.resolve("game", "paper", variables))


def test_paper_refuses_a_jar_whose_sha256_does_not_match_and_runs_java_on_one_that_does(
        node: LocalDriver, file_server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = file_server
    jar = b"PK\x03\x04 not really a Paper jar"
    (www / "paper-1.20.4.jar").write_bytes(jar)
    url = f"{base}/paper-1.20.4.jar"
    wrong = paper_spec(tmp_path / "t1", url, "0" * 64, accept_eula=True)
    port = node.allocate_port(wrong)
    node.create_directory(wrong)
    with pytest.raises(DriverError) as info:
        node.install(wrong)
    assert info.value.code == "checksum_mismatch"
    with pytest.raises(DriverError) as info:
        node.start_process(wrong, port)
    assert info.value.code == "not_installed"
    assert not list((tmp_path / "cache").rglob("paper.jar")) and node.list_files(wrong, "/") == []  # nothing

    right = paper_spec(tmp_path / "t2", url, hashlib.sha256(jar).hexdigest(), accept_eula=True, max_players=12,
                       memory=512)
    port = node.allocate_port(right)
    node.create_directory(right)
    cache = tmp_path / "cache" / "templates" / node.install(right)["cache"]
    assert (cache / "paper.jar").read_bytes() == jar
    with pytest.raises(DriverError) as info:  # Java starts, and refuses what is not a jar: nothing claims Paper ran
        node.start_process(right, port)  # may already see Java gone...
        node.wait_connectable(right, port, 30)  # ...or the wait does
    assert info.value.code == "process_exited"
    assert re.search(r"Invalid or corrupt jarfile|Error: .*jar", info.value.message), info.value.message
    properties = node.read_file(right, "server.properties").decode()
    assert f"server-port={port}" in properties and "max-players=12" in properties
    assert node.read_file(right, "eula.txt") == b"eula=true\n"


# -- node: code-server -------------------------------------------------------------------------------


def test_node_is_code_server_behind_its_password(tmp_path: Path) -> None:
    install("node")  # code-server, once per shared cache (about a minute the first time)
    catalogue = shipped_catalogue()
    iid = uuid4()
    spec = catalogue.spec(iid, "dev", "node", f"ide-{iid.hex[:8]}", catalogue.resolve("dev", "node", None))
    with local_driver(tmp_path / "data") as node:
        port, _pid = start(node, spec, timeout=60)
        address = node.address(spec, port)
        assert address == f"http://127.0.0.1:{port}/"
        assert httpx.get(f"{address}healthz", timeout=10).status_code == 200
        config = node.read_file(spec, ".config/code-server/config.yaml").decode()
        password = re.search(r"^password: (\S+)$", config, re.MULTILINE).group(1)  # type: ignore[union-attr]
        assert password == spec.variables["password"]
        with httpx.Client(base_url=address, timeout=20) as browser:
            assert "login" in browser.get("/").headers["location"]
            refused = browser.post("/login", data={"password": "not-the-password"})
            assert refused.status_code == 200 and "Incorrect password" in refused.text
            accepted = browser.post("/login", data={"password": password})
            assert accepted.status_code == 302 and "code-server-session" in accepted.cookies
            workbench = browser.get("/", follow_redirects=True)
            assert workbench.status_code == 200 and "vscode" in workbench.text.lower()
        node.stop_process(spec)
        assert not node.is_running(spec, port)
        pid_file = node.runtime_dir(spec) / "server.pid"
        assert not pid_file.exists()
        assert os.path.isdir(node.instance_dir(spec) / ".local" / "share" / "code-server")  # its state: in the files
