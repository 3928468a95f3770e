"""Per-instance Unix users: instances on one node cannot read each other's files.

When the agent runs as root (a production node, CI), each instance's server runs as a Unix user of its
own, `zlh-<first 12 hex digits of its id>`, a user with no login shell and no home of its own (created with
`useradd` when the instance's directory is made, in the regular uid range, as a node holds more instances
over its life than the system range has uids; never reused by another instance). Its files
(`instances/<id>/`) and its home (`runtime/<id>/home/`) belong to it with mode 0700, so another
instance's server (another user) can neither list nor read them; `instances/` itself is 0711 (no
listing). What the agent writes into an instance's files (customer writes, config files, a restore)
is given to that user. The agent's own state (`server.json` with the template's secrets, the console
log, the port) stays root's. Install caches are shared and read-only for servers (root-owned, 0755).

Not root (a developer's machine): servers run as the agent's own user, and the agent says so
(`InstanceUsers.status`). The user is removed with the instance's files (`userdel`).

A server starts as root only long enough to join its cgroup, then `setpriv` drops to its user (uid,
gid, no supplementary groups) before it runs the template's command: see `ProcessLauncher`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import threading
from pathlib import Path
from uuid import UUID

from services.ports import DriverError

log = logging.getLogger(__name__)

PREFIX = "zlh-"
NOLOGIN = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(p)), "/bin/false")


def user_name(instance_id: UUID | str) -> str:
    """`zlh-` and the first 12 hex digits of the instance id (31 characters at most is the Linux limit)."""
    return PREFIX + UUID(str(instance_id)).hex[:12]


class InstanceUsers:
    """Creates and removes instances' users, and gives them their files. See the module docstring."""

    def __init__(self, enabled: bool | None = None, reachable: tuple[Path, ...] = ()) -> None:
        tools = shutil.which("useradd") and shutil.which("setpriv")
        closed = next((c for c in map(_closed_ancestor, reachable) if c is not None), None)
        if enabled is None:
            enabled = os.geteuid() == 0 and bool(tools) and closed is None
        self.enabled = enabled
        if enabled:
            self.status = "each instance runs as its own Unix user (zlh-<id>), its files 0700"
        elif closed is not None and os.geteuid() == 0:
            self.status = f"not separated: {closed} is closed to other users, so a server of its own user could not " \
                          "reach its files or the install cache"
        elif os.geteuid() != 0:
            self.status = "not separated: the agent does not run as root, so servers run as its own user"
        elif not tools:
            self.status = "not separated: useradd or setpriv is missing"
        else:
            self.status = "not separated: turned off for this driver"
        self._lock = threading.Lock()

    def ensure(self, instance_id: UUID | str) -> tuple[int, int] | None:
        """The instance's (uid, gid), creating its user if need be; None when users are not separated."""
        if not self.enabled:
            return None
        name = user_name(instance_id)
        with self._lock:
            if not _exists(name):
                result = subprocess.run(
                    ["useradd", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", NOLOGIN, "--comment", f"ZLH instance {instance_id}", name],
                    capture_output=True, text=True, check=False)
                if result.returncode not in (0, 9):  # 9: it exists (made by another agent process just now)
                    raise DriverError("io_error", f"cannot create the user {name}: {result.stderr.strip()}")
            entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid

    def remove(self, instance_id: UUID | str) -> None:
        """Delete the instance's user (its files are gone already); nothing if there is none."""
        if not self.enabled:
            return
        name = user_name(instance_id)
        with self._lock:
            if not _exists(name):
                return
            result = subprocess.run(["userdel", name], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                log.warning("agent: cannot remove the user %s: %s", name, result.stderr.strip())

    def give(self, owner: tuple[int, int] | None, *paths: Path, mode: int | None = None) -> None:
        """Give `paths` (not following symlinks) to `owner`; with `mode`, set it too."""
        if owner is None:
            return
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, *owner, follow_symlinks=False)
                if mode is not None:
                    os.chmod(path, mode)

    def give_tree(self, owner: tuple[int, int] | None, root: Path) -> None:
        """Give `root` and everything under it to `owner` (symlinks themselves, never their targets)."""
        if owner is None:
            return
        self.give(owner, root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(dirpath, name), *owner, follow_symlinks=False)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _closed_ancestor(path: Path) -> Path | None:
    """The first existing directory on the way to `path` that other users cannot pass through (no o+x)."""
    current = Path(os.path.abspath(path))
    for directory in [*reversed(current.parents), current]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return None  # does not exist yet: made by the agent, with its umask
        if not mode & stat.S_IXOTH:
            return directory
    return None
