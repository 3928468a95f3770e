"""SFTP's pure rules and key parsing: usernames, the keyring, passwords, what counts as a public key."""

from __future__ import annotations

from uuid import uuid4

import asyncssh
import pytest

from domain.errors import DomainError
from domain.sftp import (
    MAX_KEYS,
    SftpPassword,
    SshKeyExistsError,
    SshKeyLimitError,
    SshKeyNotFoundError,
    SshKeyring,
    SshKeyRuleError,
    parse_username,
    sftp_username,
)
from services.sftp import parse_public_key


def test_usernames_name_the_account_and_the_server() -> None:
    iid = uuid4()
    username = sftp_username("Alice.Smith@example.com", iid)
    assert username == f"Alice.Smith@example.com.{iid.hex[:8]}"
    assert parse_username(username) == ("alice.smith@example.com", iid.hex[:8])
    assert parse_username(f"a@b.c.{iid}") == ("a@b.c", iid.hex)
    assert parse_username(f"a@b.c.{iid.hex.upper()}") == ("a@b.c", iid.hex)
    for bad in ("", "alice", "alice.1234abcd", "@.1234abcd", "a@b.c.1234abc", "a@b.c.zzzzzzzz", "a@b.c.", ".1234abcd"):
        assert parse_username(bad) is None, bad


def test_keyring_adds_removes_and_refuses_duplicates_and_too_many() -> None:
    user = uuid4()
    ring = SshKeyring(user_id=user)
    key_id = ring.add("laptop", "ssh-ed25519 AAAA", "ssh-ed25519", "SHA256:one", "2026-01-01T00:00:00Z")
    assert ring.has("SHA256:one") and not ring.has("SHA256:two")
    with pytest.raises(SshKeyExistsError):
        ring.add("again", "ssh-ed25519 AAAA", "ssh-ed25519", "SHA256:one", "2026-01-01T00:00:00Z")
    for bad in ("", "x" * 101, "nul\x00"):
        with pytest.raises(DomainError, match="name") as info:
            ring.add(bad, "k", "ssh-ed25519", "SHA256:bad", "2026-01-01T00:00:00Z")
        assert info.value.code == "validation_error"
    ring.remove(key_id, user)
    assert not ring.has("SHA256:one")
    with pytest.raises(SshKeyNotFoundError):
        ring.remove(key_id, user)
    assert ring.add("back", "k", "ssh-ed25519", "SHA256:one", "t") == key_id  # the same key gets its id back
    for n in range(MAX_KEYS - 1):
        ring.add(f"k{n}", "k", "ssh-ed25519", f"SHA256:{n}", "t")
    with pytest.raises(SshKeyLimitError):
        ring.add("one too many", "k", "ssh-ed25519", "SHA256:last", "t")
    assert len(ring.keys) == MAX_KEYS
    replayed = None
    for e in ring.collect_events():  # the state is rebuilt from the events alone
        replayed = e.mutate(replayed)
    assert replayed is not None and replayed.keys == ring.keys


def test_a_new_password_replaces_the_old_one() -> None:
    record = SftpPassword(instance_id=uuid4(), user_id=uuid4())
    assert record.password_hash is None and not record.clear(uuid4())
    record.set("$argon2id$one", record.user_id)
    record.set("$argon2id$two", record.user_id)
    assert record.password_hash == "$argon2id$two"
    assert record.clear(record.user_id) and record.password_hash is None


def test_public_keys_are_parsed_and_weak_ones_refused() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="me@laptop")
    parsed = parse_public_key(key.export_public_key("openssh").decode() + "\n")
    assert parsed.algorithm == "ssh-ed25519" and parsed.fingerprint == key.get_fingerprint("sha256")
    assert parsed.public_key == " ".join(key.export_public_key("openssh").decode().split()[:2])
    rfc4716 = key.export_public_key("rfc4716").decode()
    assert parse_public_key(rfc4716).fingerprint == parsed.fingerprint
    ecdsa = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    assert parse_public_key(ecdsa.export_public_key("openssh").decode()).algorithm == "ecdsa-sha2-nistp256"
    weak = asyncssh.generate_private_key("ssh-rsa", key_size=1024).export_public_key("openssh").decode()
    private = key.export_private_key("openssh").decode()
    for bad in (weak, private, "", "ssh-ed25519", "ssh-ed25519 AAAA", "x" * 20_000, "ssh-dss AAAAB3NzaC1kc3MAAACB"):
        with pytest.raises(SshKeyRuleError):
            parse_public_key(bad)
