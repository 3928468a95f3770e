"""SFTP credentials: a user's SSH public keys (`SshKeyring`) and per-server SFTP passwords (`SftpPassword`).

An `SshKeyring` is one stream per user (its id derives from the user's), holding every key the user
added and not removed: name, the key in OpenSSH form, its algorithm and SHA-256 fingerprint. A key is
named by its fingerprint within the keyring, so adding the same key twice is `ssh_key_exists` (409),
and the keyring holds at most `MAX_KEYS`. Parsing a key is the service's job (it needs a library); the
domain gets the parsed form.

An `SftpPassword` is one stream per (server, user): the current password's hash (a KDF's string, never
the password) and who set it. Setting a new one replaces the old one in the same event, so the old one
stops working at once; `Cleared` removes it.

SFTP usernames are `EMAIL.SHORTID` (the account's email, a dot, the server's eight-hex short id, as in
its public name): the part after the last dot names the server, the rest the account.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.ids import derive, short_id
from domain.text import check_text

MAX_KEYS = 50
MAX_KEY_NAME = 100


class SshKeyRuleError(DomainError):
    code = "validation_error"


class SshKeyExistsError(DomainError):
    code = "ssh_key_exists"


class SshKeyLimitError(DomainError):
    code = "quota_exceeded"


class SshKeyNotFoundError(DomainError):
    code = "not_found"


def keyring_id(user_id: UUID) -> UUID:
    return derive("ssh-keyring", user_id)


def ssh_key_id(user_id: UUID, fingerprint: str) -> UUID:
    """A key's id: stable for one user and one key (a removed key added again gets its id back)."""
    return derive("ssh-key", user_id, fingerprint)


def sftp_password_id(instance_id: UUID, user_id: UUID) -> UUID:
    return derive("sftp-password", instance_id, user_id)


def sftp_username(email: str, instance_id: UUID) -> str:
    """`EMAIL.SHORTID`: what a user signs in to one server's SFTP as."""
    return f"{email}.{short_id(instance_id)}"


def parse_username(username: str) -> tuple[str, str] | None:
    """(email, server short id) of an SFTP username, or None if it cannot be one.

    The server part is the eight-hex short id or the whole instance id (with or without dashes).
    """
    email, dot, server = username.rpartition(".")
    server = server.lower().replace("-", "")
    local, at, domain = email.partition("@")
    if not dot or not local or not at or not domain or len(server) not in (8, 32):
        return None
    if any(c not in "0123456789abcdef" for c in server):
        return None
    return email.strip().lower(), server


class SshKeyring(Aggregate):
    TOPIC = "zlh.SshKeyring"

    class Event(Aggregate.Event):
        TOPIC = "zlh.SshKeyring.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.SshKeyring.Opened"
        user_id: UUID

    class KeyAdded(Event):
        TOPIC = "zlh.SshKeyring.KeyAdded"
        key_id: UUID
        name: str
        public_key: str
        algorithm: str
        fingerprint: str
        added_at: str

    class KeyRemoved(Event):
        TOPIC = "zlh.SshKeyring.KeyRemoved"
        key_id: UUID
        by: UUID

    @staticmethod
    def create_id(user_id: UUID) -> UUID:
        return keyring_id(user_id)

    @event(Opened)
    def __init__(self, user_id: UUID) -> None:
        self.user_id = user_id
        self.keys: dict[str, dict[str, str]] = {}  # key id -> {name, public_key, algorithm, fingerprint, added_at}

    def add(self, name: str, public_key: str, algorithm: str, fingerprint: str, added_at: str) -> UUID:
        """Add a parsed key under `name` (1-100 characters of free text); its id."""
        if not 1 <= len(name) <= MAX_KEY_NAME:
            raise SshKeyRuleError(f"a key's name is 1 to {MAX_KEY_NAME} characters")
        check_text("name", name)
        key_id = ssh_key_id(self.user_id, fingerprint)
        if str(key_id) in self.keys:
            raise SshKeyExistsError(f"this key ({fingerprint}) is already on your account")
        if len(self.keys) >= MAX_KEYS:
            raise SshKeyLimitError(f"an account holds at most {MAX_KEYS} SSH keys; remove one first")
        self._key_added(key_id=key_id, name=name, public_key=public_key, algorithm=algorithm,
                        fingerprint=fingerprint, added_at=added_at)
        return key_id

    def remove(self, key_id: UUID, by: UUID) -> None:
        if str(key_id) not in self.keys:
            raise SshKeyNotFoundError("no such SSH key")
        self._key_removed(key_id=key_id, by=by)

    def has(self, fingerprint: str) -> bool:
        return str(ssh_key_id(self.user_id, fingerprint)) in self.keys

    @event(KeyAdded)
    def _key_added(self, key_id: UUID, name: str, public_key: str, algorithm: str, fingerprint: str,
                   added_at: str) -> None:
        self.keys[str(key_id)] = {"name": name, "public_key": public_key, "algorithm": algorithm,
                                  "fingerprint": fingerprint, "added_at": added_at}

    @event(KeyRemoved)
    def _key_removed(self, key_id: UUID, by: UUID) -> None:
        self.keys.pop(str(key_id), None)


class SftpPassword(Aggregate):
    TOPIC = "zlh.SftpPassword"

    class Event(Aggregate.Event):
        TOPIC = "zlh.SftpPassword.Event"

    class Opened(Event, Aggregate.Created):
        TOPIC = "zlh.SftpPassword.Opened"
        instance_id: UUID
        user_id: UUID

    class Set(Event):
        """A new password (its hash) replaces any earlier one."""

        TOPIC = "zlh.SftpPassword.Set"
        password_hash: str
        by: UUID

    class Cleared(Event):
        TOPIC = "zlh.SftpPassword.Cleared"
        by: UUID

    @staticmethod
    def create_id(instance_id: UUID, user_id: UUID) -> UUID:
        return sftp_password_id(instance_id, user_id)

    @event(Opened)
    def __init__(self, instance_id: UUID, user_id: UUID) -> None:
        self.instance_id = instance_id
        self.user_id = user_id
        self.password_hash: str | None = None

    def set(self, password_hash: str, by: UUID) -> None:
        self._set(password_hash=password_hash, by=by)

    def clear(self, by: UUID) -> bool:
        if self.password_hash is None:
            return False
        self._cleared(by=by)
        return True

    @event(Set)
    def _set(self, password_hash: str, by: UUID) -> None:
        self.password_hash = password_hash

    @event(Cleared)
    def _cleared(self, by: UUID) -> None:
        self.password_hash = None
