"""A throwaway Dovecot IMAP server (Debian's `dovecot-imapd`) for tests: one mailbox, plain IMAP on loopback.

`Dovecot().start()` writes a private configuration in a fresh folder under the system's temp dir (readable by
Dovecot's unprivileged processes, unlike pytest's private tmp_path; static password, Maildir owned by `nobody`),
runs `dovecot -F` and waits (polling against a deadline) until it accepts IMAP logins; `stop()` signals that
very process and removes the folder. Needs root (Dovecot's master drops privileges to its own users),
as CI and the developers' machines have.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = os.environ.get("ZLH_TEST_DOVECOT", "/usr/sbin/dovecot")
USER, PASSWORD = "support", "imap-test-password"

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid=nobody gid={group} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def installed() -> bool:
    return os.path.exists(DOVECOT) or shutil.which("dovecot") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="zlh-dovecot-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"imap://{USER}:{PASSWORD}@127.0.0.1:{self.port}/INBOX"

    def start(self, timeout: float = 20.0) -> Dovecot:
        nobody = pwd.getpwnam("nobody")
        group = "nogroup"
        for sub in ("run", "state", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "home", nobody.pw_uid, nobody.pw_gid)
        os.chmod(self.root, 0o755)
        config = self.root / "dovecot.conf"
        config.write_text(CONFIG.format(root=self.root, password=PASSWORD, group=group, port=self.port))
        binary = DOVECOT if os.path.exists(DOVECOT) else shutil.which("dovecot")
        with (self.root / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen([str(binary), "-F", "-c", str(config)], stdout=subprocess.DEVNULL,
                                            stderr=stderr)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {(self.root / 'stderr.log').read_text()}{self._log()}")
            try:
                client = imaplib.IMAP4("127.0.0.1", self.port, timeout=2)
                client.login(USER, PASSWORD)
                client.logout()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not accept logins within {timeout}s{self._log()}")
            time.sleep(0.05)  # polling interval, bounded by the deadline

    def _log(self) -> str:
        log = self.root / "dovecot.log"
        return f"; log: {log.read_text()[-2000:]}" if log.exists() else ""

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        """Deliver a message as an MX would (IMAP APPEND)."""
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            client.login(USER, PASSWORD)
            status, data = client.append(mailbox, None, None, raw)
            assert status == "OK", data
        finally:
            client.logout()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
