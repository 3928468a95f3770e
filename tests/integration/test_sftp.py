"""SFTP with a real client (paramiko): keys and passwords from the API, every file operation through the node
agent, the files API's path rules and size limit, refusals, rate limits and the activity log.

The control plane runs in-process (SQLite and PostgreSQL, or memory with --fast); instances are provisioned by the
fake driver, but their files live on a real node agent (`LocalDriver` behind its HTTP API), so every SFTP write
reaches the agent exactly as the files API's do.
"""

from __future__ import annotations

import io
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest
from fastapi.testclient import TestClient

from services.adapters.agent_client import AgentDriver
from services.adapters.fake_driver import FakeDriver
from services.agent.driver import LocalDriver
from services.agent.server import start_agent_in_thread
from services.bootstrap import Container
from services.ports import InstanceSpec
from services.workers.sftp import MAX_WRITE_BYTES
from tests.integration.conftest import poll
from tests.integration.test_api import assert_problem, wait_operation

pytestmark = pytest.mark.real_services  # a real SFTP server on a socket, real clients


class FilesOnAgent(FakeDriver):
    """The fake driver for lifecycle steps; an instance's files on a real node agent."""

    def __init__(self, agent: AgentDriver) -> None:
        super().__init__()
        self.agent = agent

    def create_directory(self, spec: InstanceSpec) -> str:
        super().create_directory(spec)
        return self.agent.create_directory(spec)

    def list_files(self, spec: InstanceSpec, path: str) -> list[dict[str, Any]]:
        return self.agent.list_files(spec, path)

    def read_file(self, spec: InstanceSpec, path: str) -> bytes:
        return self.agent.read_file(spec, path)

    def write_file(self, spec: InstanceSpec, path: str, content: bytes) -> None:
        self.agent.write_file(spec, path, content)

    def make_directory(self, spec: InstanceSpec, path: str) -> None:
        self.agent.make_directory(spec, path)

    def delete_path(self, spec: InstanceSpec, path: str, directory: bool = False) -> None:
        self.agent.delete_path(spec, path, directory)

    def rename_path(self, spec: InstanceSpec, source: str, target: str, overwrite: bool = False) -> None:
        self.agent.rename_path(spec, source, target, overwrite)


@pytest.fixture
def node(tmp_path: Path) -> LocalDriver:
    return LocalDriver(tmp_path / "node")


@pytest.fixture
def driver(node: LocalDriver) -> Iterator[FilesOnAgent]:
    secret = secrets.token_urlsafe(32)
    url, stop = start_agent_in_thread(node, secret)
    agent = AgentDriver(url, secret)
    try:
        yield FilesOnAgent(agent)
    finally:
        agent.close()
        stop()


@pytest.fixture
def container(make_container: Callable[..., Container]) -> Container:
    container = make_container(sftp_listen="127.0.0.1:0", auth_failures_per_minute=12)
    container.start_sftp()
    return container


def new_server(client: TestClient, headers: dict[str, str], name: str = "survival") -> str:
    r = client.post("/api/instances", json={"kind": "game", "name": name, "template": "minecraft"},
                    headers={**headers, "Idempotency-Key": name})
    assert r.status_code == 202, r.text
    assert wait_operation(client, headers, r.json()["operation_id"])["phase"] == "succeeded"
    return r.json()["instance_id"]


def new_key() -> tuple[paramiko.PKey, str]:
    """A fresh ed25519 key: paramiko's private key, and the public line for the API."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="tester@laptop")
    private = paramiko.Ed25519Key.from_private_key(io.StringIO(key.export_private_key("openssh").decode()))
    return private, key.export_public_key("openssh").decode().strip()


def connect(port: int, username: str, *, password: str | None = None,
            pkey: paramiko.PKey | None = None) -> paramiko.SFTPClient:
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username=username, password=password, pkey=pkey)
        return paramiko.SFTPClient.from_transport(transport)
    except BaseException:
        transport.close()
        raise


def close(sftp: paramiko.SFTPClient) -> None:
    transport = sftp.get_channel().get_transport()
    sftp.close()
    transport.close()


def refused(port: int, username: str, **credentials: Any) -> bool:
    try:
        close(connect(port, username, **credentials))
    except (paramiko.AuthenticationException, paramiko.SSHException, EOFError, ConnectionError):
        return True
    return False


@pytest.fixture
def alice(new_user: Callable) -> dict[str, str]:
    return new_user("alice@example.com")


def test_keys_are_managed_in_the_api(client: TestClient, alice: dict[str, str], new_user: Callable) -> None:
    _private, public = new_key()
    r = client.post("/api/ssh-keys", json={"name": "laptop", "public_key": public}, headers=alice)
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["name"] == "laptop" and key["algorithm"] == "ssh-ed25519" and key["fingerprint"].startswith("SHA256:")
    assert key["public_key"] == " ".join(public.split()[:2])  # the comment is dropped
    assert_problem(client.post("/api/ssh-keys", json={"name": "again", "public_key": public}, headers=alice),
                   409, "ssh_key_exists")
    for bad in ("ssh-ed25519 AAAAnotbase64!!", "hello", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7", ""):
        assert_problem(client.post("/api/ssh-keys", json={"name": "bad", "public_key": bad}, headers=alice),
                       422, "validation_error")
    dsa = asyncssh.generate_private_key("ssh-rsa", key_size=1024).export_public_key("openssh").decode()
    assert_problem(client.post("/api/ssh-keys", json={"name": "weak", "public_key": dsa}, headers=alice),
                   422, "validation_error")
    assert_problem(client.post("/api/ssh-keys", json={"name": "bad\x00name", "public_key": public}, headers=alice),
                   422, "validation_error")
    listed = client.get("/api/ssh-keys", headers=alice).json()
    assert [k["id"] for k in listed["items"]] == [key["id"]] and listed["next_cursor"] is None
    bob = new_user("bob@example.com")
    assert client.get("/api/ssh-keys", headers=bob).json()["items"] == []
    assert_problem(client.delete(f"/api/ssh-keys/{key['id']}", headers=bob), 404, "not_found")
    assert client.delete(f"/api/ssh-keys/{key['id']}", headers=alice).status_code == 204
    assert client.get("/api/ssh-keys", headers=alice).json()["items"] == []
    assert_problem(client.delete(f"/api/ssh-keys/{key['id']}", headers=alice), 404, "not_found")
    assert client.post("/api/ssh-keys", json={"name": "back", "public_key": public}, headers=alice).status_code == 201


def test_every_file_operation_over_sftp_reaches_the_agent(client: TestClient, alice: dict[str, str],
                                                          container: Container) -> None:
    iid = new_server(client, alice)
    private, public = new_key()
    added = client.post("/api/ssh-keys", json={"name": "laptop", "public_key": public}, headers=alice)
    assert added.status_code == 201, added.text
    details = client.get(f"/api/instances/{iid}/sftp", headers=alice).json()
    assert details["username"] == f"alice@example.com.{iid.replace('-', '')[:8]}"
    assert details["host"] == "127.0.0.1" and details["port"] == container.sftp.port
    assert details["password_set"] is False and details["host_key_fingerprint"].startswith("SHA256:")

    sftp = connect(details["port"], details["username"], pkey=private)
    try:
        assert sftp.normalize(".") == "/"
        sftp.mkdir("/worlds")
        with sftp.open("/worlds/level.dat", "wb") as f:
            f.write(b"level data")
        sftp.putfo(io.BytesIO(b"motd=hello\n"), "/server.properties")
        assert sorted(sftp.listdir("/")) == ["server.properties", "worlds"]
        attrs = {a.filename: a for a in sftp.listdir_attr("/")}
        assert stat.S_ISDIR(attrs["worlds"].st_mode) and attrs["server.properties"].st_size == 11
        assert sftp.stat("/worlds/level.dat").st_size == 10
        buffer = io.BytesIO()
        sftp.getfo("/server.properties", buffer)
        assert buffer.getvalue() == b"motd=hello\n"
        sftp.rename("/worlds/level.dat", "/worlds/level.old")
        sftp.posix_rename("/server.properties", "/server.properties.bak")
        with pytest.raises(IOError):
            sftp.rename("/worlds/level.old", "/server.properties.bak")  # SFTP v3 rename never overwrites
        sftp.mkdir("/empty")
        sftp.rmdir("/empty")
        sftp.remove("/server.properties.bak")
        with pytest.raises(FileNotFoundError):
            sftp.stat("/server.properties.bak")
        with pytest.raises(IOError):
            sftp.rmdir("/worlds")  # not empty
    finally:
        close(sftp)
    # What SFTP did is what the files API (and the agent) see.
    listing = client.get(f"/api/instances/{iid}/files", params={"path": "/worlds"}, headers=alice).json()
    assert listing["entries"] == [{"name": "level.old", "type": "file", "size": 10}]
    assert client.get(f"/api/instances/{iid}/files/content", params={"path": "/worlds/level.old"},
                      headers=alice).content == b"level data"
    actions = poll(lambda: [(i["action"], i["detail"]) for i in
                            client.get(f"/api/instances/{iid}/activity", headers=alice).json()["items"]],
                   lambda items: any(a == "file.remove" for a, _ in items))
    done = [a for a, _ in actions if a.startswith("file.")]
    # Newest first by time: entries of the same instant come in id order, so compare them as a multiset.
    assert sorted(done) == sorted(["file.remove", "file.remove", "file.mkdir", "file.rename", "file.rename",
                                   "file.write", "file.write", "file.mkdir"])
    assert ("file.rename", {"path": "/worlds/level.dat", "target": "/worlds/level.old", "via": "sftp"}) in actions
    assert ("file.write", {"path": "/worlds/level.dat", "size": 10}) in actions


def test_paths_that_escape_and_files_too_large_are_refused(client: TestClient, alice: dict[str, str],
                                                           node: LocalDriver, tmp_path: Path) -> None:
    iid = new_server(client, alice)
    password = client.post(f"/api/instances/{iid}/sftp/password", headers=alice).json()
    root = next((node.data_dir / "instances").iterdir())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"host secret")
    (root / "escape").symlink_to(outside)
    sftp = connect(password["port"], password["username"], password=password["password"])
    try:
        for path in ("/../../etc/passwd", "../outside/secret.txt", "/escape/secret.txt"):
            with pytest.raises(PermissionError):
                sftp.open(path, "rb").read()
        with pytest.raises(PermissionError):
            sftp.listdir("/escape")
        with pytest.raises(PermissionError):
            sftp.putfo(io.BytesIO(b"pwned"), "/escape/new.txt")
        with pytest.raises(PermissionError):
            sftp.rename("/escape/secret.txt", "/stolen.txt")
        with pytest.raises(PermissionError):
            sftp.remove("/escape/secret.txt")
        assert sftp.normalize("/../..") == "/"
        with pytest.raises(IOError, match="too_large"), sftp.open("/huge.bin", "wb") as f:
            f.write(b"x" * (MAX_WRITE_BYTES + 1))
        with pytest.raises(FileNotFoundError):
            sftp.stat("/huge.bin")  # nothing was written
        sftp.putfo(io.BytesIO(b"x" * MAX_WRITE_BYTES), "/just-fits.bin")  # the limit itself is fine
        assert sftp.stat("/just-fits.bin").st_size == MAX_WRITE_BYTES
    finally:
        close(sftp)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"host secret"


def test_wrong_credentials_revoked_ones_and_other_accounts_are_refused(client: TestClient, alice: dict[str, str],
                                                                       new_user: Callable, admin: dict[str, str],
                                                                       container: Container) -> None:
    iid = new_server(client, alice)
    first = client.post(f"/api/instances/{iid}/sftp/password", headers=alice)
    assert first.status_code == 201, first.text
    port, username = first.json()["port"], first.json()["username"]
    assert client.get(f"/api/instances/{iid}/sftp", headers=alice).json()["password_set"] is True
    second = client.post(f"/api/instances/{iid}/sftp/password", headers=alice).json()["password"]
    assert refused(port, username, password=first.json()["password"])  # rotating revokes the old one
    assert not refused(port, username, password=second)
    assert refused(port, username, password="wrong")
    assert refused(port, username.replace("alice", "mallory"), password=second)
    assert refused(port, "alice@example.com.00000000", password=second)
    # Keys: only the account's own, and only while they are on it.
    private, public = new_key()
    other, _ = new_key()
    assert refused(port, username, pkey=private)
    key = client.post("/api/ssh-keys", json={"name": "laptop", "public_key": public}, headers=alice).json()
    assert refused(port, username, pkey=other)
    assert not refused(port, username, pkey=private)
    bob = new_user("bob@example.com")
    client.post("/api/ssh-keys", json={"name": "alice's key on bob", "public_key": public}, headers=bob)
    bob_id = client.get("/api/me", headers=bob).json()["id"]
    assert refused(port, username.replace("alice", "bob"), pkey=private)  # not bob's server
    assert_problem(client.get(f"/api/instances/{iid}/sftp", headers=bob), 404, "not_found")
    assert_problem(client.post(f"/api/instances/{iid}/sftp/password", headers=bob), 404, "not_found")
    # An open session ends once its key is removed.
    container.sftp.context.recheck_seconds = 0.0
    sftp = connect(port, username, pkey=private)
    try:
        assert sftp.listdir("/") == []
        assert client.delete(f"/api/ssh-keys/{key['id']}", headers=alice).status_code == 204
        with pytest.raises((PermissionError, EOFError, OSError, paramiko.SSHException)):
            sftp.listdir("/")
    finally:
        close(sftp)
    assert refused(port, username, pkey=private)
    # A disabled account signs in nowhere; enabled again, it does.
    alice_id = client.get("/api/me", headers=alice).json()["id"]
    assert client.post(f"/api/admin/users/{alice_id}/disable", headers=admin).status_code == 200
    assert refused(port, username, password=second)
    assert client.post(f"/api/admin/users/{alice_id}/enable", headers=admin).status_code == 200
    assert not refused(port, username, password=second)
    assert bob_id


def test_failed_sign_ins_are_limited_per_address(client: TestClient, alice: dict[str, str]) -> None:
    iid = new_server(client, alice)
    created = client.post(f"/api/instances/{iid}/sftp/password", headers=alice).json()
    port, username, password = created["port"], created["username"], created["password"]
    for _ in range(12):  # ZLH_AUTH_FAILURES_PER_MINUTE=12 in this module
        assert refused(port, username, password="guess")
    assert refused(port, username, password=password)  # over the limit: even the right password


def test_a_deleted_server_and_a_suspended_account(client: TestClient, alice: dict[str, str]) -> None:
    iid = new_server(client, alice)
    created = client.post(f"/api/instances/{iid}/sftp/password", headers=alice).json()
    r = client.delete(f"/api/instances/{iid}", headers=alice)
    assert r.status_code == 202
    wait_operation(client, alice, r.json()["operation_id"])
    assert refused(created["port"], created["username"], password=created["password"])
    assert_problem(client.get(f"/api/instances/{iid}/sftp", headers=alice), 404, "not_found")


def test_openssh_sftp_client_in_batch_mode(client: TestClient, alice: dict[str, str], tmp_path: Path) -> None:
    """OpenSSH's own `sftp`, as customers use it: a key file, `put`, `ls`, `rename`, `get`."""
    import shutil
    import subprocess

    binary, keygen = shutil.which("sftp"), shutil.which("ssh-keygen")
    assert binary and keygen, "OpenSSH's sftp and ssh-keygen are needed (apt-get install openssh-client)"
    iid = new_server(client, alice)
    key_file = tmp_path / "id_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text()
    added = client.post("/api/ssh-keys", json={"name": "openssh", "public_key": public}, headers=alice)
    assert added.status_code == 201, added.text
    details = client.get(f"/api/instances/{iid}/sftp", headers=alice).json()
    (tmp_path / "mod.jar").write_bytes(b"PK\x03\x04 a mod")
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir mods\nput {tmp_path / 'mod.jar'} mods/mod.jar\nls -l mods\n"
                     f"rename mods/mod.jar mods/renamed.jar\nget mods/renamed.jar {tmp_path / 'back.jar'}\n")
    result = subprocess.run(
        [binary, "-b", str(batch), "-i", str(key_file), "-P", str(details["port"]), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}",
         "-o", "IdentitiesOnly=yes", f"{details['username']}@{details['host']}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mod.jar" in result.stdout
    assert (tmp_path / "back.jar").read_bytes() == b"PK\x03\x04 a mod"
    listing = client.get(f"/api/instances/{iid}/files", params={"path": "/mods"}, headers=alice).json()
    assert listing["entries"] == [{"name": "renamed.jar", "type": "file", "size": 10}]


def test_a_subuser_signs_in_with_files_read_and_writes_only_with_files_write(
        client: TestClient, alice: dict[str, str], new_user: Callable) -> None:
    iid = new_server(client, alice)
    bob = new_user("bob@example.com")
    private, public = new_key()
    assert client.post("/api/ssh-keys", json={"name": "bob", "public_key": public}, headers=bob).status_code == 201
    assert client.get(f"/api/instances/{iid}/sftp", headers=bob).status_code == 404  # not on the server yet
    port = client.get(f"/api/instances/{iid}/sftp", headers=alice).json()["port"]
    username = f"bob@example.com.{iid.replace('-', '')[:8]}"
    assert refused(port, username, pkey=private)

    added = client.post(f"/api/instances/{iid}/subusers", headers=alice,
                        json={"email": "bob@example.com", "permissions": ["console"]})
    assert added.status_code == 201, added.text
    assert_problem(client.get(f"/api/instances/{iid}/sftp", headers=bob), 403, "permission_denied")
    assert refused(port, username, pkey=private)  # on the server, but without files.read

    bob_id = added.json()["user_id"]
    client.patch(f"/api/instances/{iid}/subusers/{bob_id}", headers=alice, json={"permissions": ["files.read"]})
    assert client.get(f"/api/instances/{iid}/sftp", headers=bob).json()["username"] == username
    sftp = connect(port, username, pkey=private)
    try:
        assert sftp.listdir("/") is not None
        with pytest.raises(IOError):
            sftp.putfo(io.BytesIO(b"x"), "/bob.txt")  # reading only
    finally:
        close(sftp)

    client.patch(f"/api/instances/{iid}/subusers/{bob_id}", headers=alice,
                 json={"permissions": ["files.read", "files.write"]})
    sftp = connect(port, username, pkey=private)
    try:
        with sftp.open("/bob.txt", "wb") as f:
            f.write(b"from bob")
    finally:
        close(sftp)
    assert client.get(f"/api/instances/{iid}/files/content", params={"path": "/bob.txt"},
                      headers=alice).content == b"from bob"
