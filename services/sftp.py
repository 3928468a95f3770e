"""Use cases for SFTP: SSH keys on the account, per-server SFTP passwords, and who may sign in to which server.

Keys are parsed here (asyncssh: OpenSSH `authorized_keys` form, or RFC 4716) and kept in the user's
`SshKeyring`; a password is random, shown once and kept as an argon2id hash (argon2-cffi) in the
server's `SftpPassword` for that user. Sign-in reads the store, never a read model: a key removed, a
password replaced or an account disabled holds from the very next sign-in, in every process; a session
already open checks again every `RECHECK_SECONDS` (services/workers/sftp.py).

`sftp_access` is the one check of who may use a server's files over SFTP: the owner only, today. Subusers
with `files.read` / `files.write` extend it there (and `candidate_instances`, which finds the server a
username names among the user's own).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncssh
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from eventsourcing.persistence import IntegrityError

from domain.errors import DomainError
from domain.ids import user_id_for_email
from domain.instance import Instance
from domain.lifecycle import InstanceStatus
from domain.sftp import (
    SftpPassword,
    SshKeyNotFoundError,
    SshKeyring,
    SshKeyRuleError,
    keyring_id,
    parse_username,
    sftp_password_id,
    sftp_username,
)
from domain.user import User
from projections import subusers as subusers_view
from projections.base import Database
from services.infrastructure.store import ZLH
from services.lifecycle import NotFoundError, load_instance
from services.server_access import FILES_READ, FILES_WRITE, authorize

#: How often an open session checks again that its user, server and credential still allow it.
RECHECK_SECONDS = 5.0
#: The longest public key text accepted (an RSA 16384-bit key in OpenSSH form is about 2.8 KB).
MAX_PUBLIC_KEY = 16_384
#: Key types accepted: no DSA (broken), no certificates (no CA here).
ALGORITHMS = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
MIN_RSA_BITS = 2048

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))  # verified against for unknown users: same cost, no hint


# SSH keys.

@dataclass(frozen=True)
class ParsedKey:
    public_key: str  # "ALGORITHM BASE64" (the comment dropped)
    algorithm: str
    fingerprint: str  # "SHA256:..." as `ssh-keygen -l` shows it


def parse_public_key(text: str) -> ParsedKey:
    """A public key from one line of `authorized_keys` (or RFC 4716); 422 `validation_error` if it is none."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_PUBLIC_KEY:
        raise SshKeyRuleError(f"public_key is one SSH public key, at most {MAX_PUBLIC_KEY} characters")
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        raise SshKeyRuleError("that is a private key: never share it; paste the public key (the .pub file) instead")
    try:
        key = asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError, UnicodeError) as exc:
        raise SshKeyRuleError(f"public_key is not an SSH public key ({exc}); paste the line of your "
                              "id_ed25519.pub (or id_rsa.pub)") from None
    algorithm = key.get_algorithm()
    if algorithm not in ALGORITHMS:
        raise SshKeyRuleError(f"{algorithm} keys are not accepted; use one of {', '.join(ALGORITHMS)}")
    if algorithm == "ssh-rsa" and getattr(getattr(key, "pyca_key", None), "key_size", MIN_RSA_BITS) < MIN_RSA_BITS:
        raise SshKeyRuleError(f"an RSA key must have at least {MIN_RSA_BITS} bits")
    openssh = key.export_public_key("openssh").decode().split()
    return ParsedKey(f"{openssh[0]} {openssh[1]}", algorithm, key.get_fingerprint("sha256"))


def _key_item(key_id: str, key: dict[str, str]) -> dict[str, Any]:
    return {"id": key_id, "name": key["name"], "public_key": key["public_key"], "algorithm": key["algorithm"],
            "fingerprint": key["fingerprint"], "created_at": key["added_at"]}


def add_ssh_key(app: ZLH, user_id: UUID, name: str, public_key: str, now: datetime | None = None) -> dict[str, Any]:
    """Add a key to the user's account; the key as listed."""
    parsed = parse_public_key(public_key)
    added_at = (now or datetime.now(UTC)).isoformat(timespec="microseconds").replace("+00:00", "Z")
    for _ in range(10):
        keyring = app.find(keyring_id(user_id), SshKeyring) or SshKeyring(user_id=user_id)
        key_id = keyring.add(name, parsed.public_key, parsed.algorithm, parsed.fingerprint, added_at)
        try:
            app.save(keyring)
        except IntegrityError:
            continue  # another key was added or removed at the same moment: look again
        return _key_item(str(key_id), keyring.keys[str(key_id)])
    raise RuntimeError("add_ssh_key: too much contention")


def list_ssh_keys(app: ZLH, user_id: UUID) -> list[dict[str, Any]]:
    """The user's keys, newest first."""
    keyring = app.find(keyring_id(user_id), SshKeyring)
    if keyring is None:
        return []
    items = [_key_item(k, v) for k, v in keyring.keys.items()]
    return sorted(items, key=lambda i: (i["created_at"], i["id"]), reverse=True)


def remove_ssh_key(app: ZLH, user_id: UUID, key_id: UUID) -> None:
    """Remove one of the user's keys: it signs in nowhere from now on (open sessions end within seconds)."""
    for _ in range(10):
        keyring = app.find(keyring_id(user_id), SshKeyring)
        if keyring is None:
            raise SshKeyNotFoundError("no such SSH key")
        keyring.remove(key_id, user_id)
        try:
            app.save(keyring)
            return
        except IntegrityError:
            continue
    raise RuntimeError("remove_ssh_key: too much contention")


# Who may use a server's files over SFTP.

@dataclass(frozen=True)
class SftpGrant:
    """What one signed-in SFTP user may do on one server. `owner_id` is whose server it is (billing, quotas)."""

    user_id: UUID
    email: str
    instance_id: UUID
    owner_id: UUID
    can_write: bool
    method: str = ""  # "publickey" or "password"
    credential: str = ""  # the key's fingerprint, or the password hash it was checked against


def sftp_access(app: ZLH, user: User, instance: Instance) -> SftpGrant | None:
    """The one access check: may `user` use `instance`'s files over SFTP, and write them?

    The owner, or a subuser whose membership holds `files.read` (writing with `files.write`), while their
    account is enabled and the server is not being deleted: the same check as every files route
    (`services.server_access.authorize`), read from the membership's own stream.
    """
    if user.disabled or instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        return None
    try:
        grant = authorize(app, user.id, False, instance.id, FILES_READ)
    except DomainError:
        return None
    return SftpGrant(user.id, user.email, instance.id, instance.owner_id, can_write=FILES_WRITE in grant.permissions)


def candidate_instances(db: Database, user: User, server: str) -> list[UUID]:
    """The servers `user` owns or is a subuser of whose id starts with `server` (an 8-hex short id or the
    whole id)."""
    if len(server) == 32:
        return [UUID(server)]
    return [UUID(row["id"]) for row in subusers_view.list_for_member(db, str(user.id), 10_000)
            if UUID(row["id"]).hex.startswith(server)]


def _resolve(app: ZLH, db: Database, username: str) -> tuple[User, SftpGrant] | None:
    parsed = parse_username(username)
    if parsed is None:
        return None
    email, server = parsed
    user = app.find(user_id_for_email(email), User)
    if user is None or user.disabled:
        return None
    matches = candidate_instances(db, user, server)
    if len(matches) != 1:
        return None
    instance = app.find(matches[0], Instance)
    if instance is None:
        return None
    grant = sftp_access(app, user, instance)
    return (user, grant) if grant is not None else None


def sign_in_with_key(app: ZLH, db: Database, username: str, key: asyncssh.SSHKey) -> SftpGrant | None:
    """The grant if `username` names a server its user may use and `key` is on that user's account."""
    resolved = _resolve(app, db, username)
    if resolved is None:
        return None
    user, grant = resolved
    fingerprint = key.get_fingerprint("sha256")
    keyring = app.find(keyring_id(user.id), SshKeyring)
    if keyring is None or not keyring.has(fingerprint):
        return None
    return SftpGrant(grant.user_id, grant.email, grant.instance_id, grant.owner_id, grant.can_write, "publickey",
                     fingerprint)


def sign_in_with_password(app: ZLH, db: Database, username: str, password: str) -> SftpGrant | None:
    """The grant if `username` names a server its user may use and `password` is that server's SFTP password
    for them. Unknown users cost the same argon2 verification as known ones."""
    resolved = _resolve(app, db, username)
    record = app.find(sftp_password_id(resolved[1].instance_id, resolved[0].id), SftpPassword) if resolved else None
    stored = record.password_hash if record is not None else None
    if not _verify(stored or _DUMMY_HASH, password) or resolved is None or stored is None:
        return None
    grant = resolved[1]
    return SftpGrant(grant.user_id, grant.email, grant.instance_id, grant.owner_id, grant.can_write, "password",
                     stored)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def still_allowed(app: ZLH, grant: SftpGrant) -> bool:
    """Whether an open session may go on: the user enabled, the access check passing, the credential current."""
    user = app.find(grant.user_id, User)
    instance = app.find(grant.instance_id, Instance)
    if user is None or instance is None or sftp_access(app, user, instance) is None:
        return False
    if grant.method == "publickey":
        keyring = app.find(keyring_id(user.id), SshKeyring)
        return keyring is not None and keyring.has(grant.credential)
    record = app.find(sftp_password_id(instance.id, user.id), SftpPassword)
    return record is not None and record.password_hash == grant.credential


# Passwords and connection details, for the API.

@dataclass(frozen=True)
class Endpoint:
    """Where customers connect: host and port, and the server's host key fingerprint (None if not known here)."""

    host: str
    port: int
    host_key_fingerprint: str | None = None


def new_password() -> str:
    return secrets.token_urlsafe(18)


def set_sftp_password(app: ZLH, caller_id: UUID, owner_id: UUID | None, instance_id: UUID) -> str:
    """A new random SFTP password for the caller on this server (shown once; only its argon2id hash is kept).
    It replaces the previous one, which stops working at once."""
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        raise NotFoundError("no such instance")
    password = new_password()
    password_hash = _hasher.hash(password)
    for _ in range(10):
        record = app.find(sftp_password_id(instance.id, caller_id), SftpPassword) or \
            SftpPassword(instance_id=instance.id, user_id=caller_id)
        record.set(password_hash, caller_id)
        try:
            app.save(record)
            return password
        except IntegrityError:
            continue
    raise RuntimeError("set_sftp_password: too much contention")


def connection_details(app: ZLH, caller: User | None, caller_id: UUID, owner_id: UUID | None, instance_id: UUID,
                       endpoint: Endpoint) -> dict[str, Any]:
    """`{"host", "port", "username", "password_set", "host_key_fingerprint"}` for the caller on this server."""
    instance = load_instance(app, instance_id, owner_id)
    if instance.status in (InstanceStatus.DELETED, InstanceStatus.DELETING):
        raise NotFoundError("no such instance")
    user = caller or app.find(caller_id, User)
    if user is None:
        raise NotFoundError("no such user")
    record = app.find(sftp_password_id(instance.id, caller_id), SftpPassword)
    return {"host": endpoint.host, "port": endpoint.port, "username": sftp_username(user.email, instance.id),
            "password_set": record is not None and record.password_hash is not None,
            "host_key_fingerprint": endpoint.host_key_fingerprint}
