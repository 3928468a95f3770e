"""Real servers in tests: one install cache for the whole run, and a real Minecraft client.

Tests that run the shipped templates (the driver contract, e2e, browser) share one node install
cache, `ZLH_TEST_CACHE` (default `/tmp/zlh-test-cache`; under /tmp so that servers running as
other users can read it), which the tests fill themselves on first use: flying-squid once,
JupyterLab once, code-server once, kept for later runs. `install(name)` installs a shipped
template there through the node agent's own `Installer`, under the same lock a server's
install step takes; `cache_env()` points a `zlh serve` or `zlh agent` at it.

`mineflayer()` installs the mineflayer client (npm, pinned) there too, and `run_bot` sends a
real bot in: it joins in offline mode, says one line, and leaves.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from functools import cache
from pathlib import Path

from mcstatus import JavaServer
from mcstatus.responses import JavaStatusResponse

from services.agent.installs import Installer
from services.agent.processes import ProcessLauncher
from services.infrastructure.files import file_lock
from services.infrastructure.templates import shipped_catalogue

ROOT = Path(__file__).resolve().parents[1]
TEST_CACHE = Path(os.environ.get("ZLH_TEST_CACHE", "/tmp/zlh-test-cache"))
#: The client the tests send in: 4.25.0 is the newest mineflayer that declares Node 18+ support.
MINEFLAYER = "mineflayer@4.25.0"
BOT = ROOT / "tests" / "e2e" / "chat_bot.js"


def cache_dir() -> Path:
    """The shared install cache, created if missing; refused if someone else owns it."""
    TEST_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = TEST_CACHE.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeError(f"{TEST_CACHE} must be owned by this user and writable by no one else; "
                           "remove it or set ZLH_TEST_CACHE")
    return TEST_CACHE


def cache_env() -> dict[str, str]:
    """The setting that makes a `zlh serve` or `zlh agent` use the shared cache."""
    return {"ZLH_CACHE_DIR": str(cache_dir())}


@cache
def install(name: str) -> dict:
    """Install the shipped template `name` into the shared cache (once; later calls find it)."""
    catalogue = shipped_catalogue()
    template = catalogue.find(name)
    assert template is not None, name
    variables = catalogue.resolve(template.kind, name, {})
    installer = Installer(cache_dir(), ProcessLauncher())
    return installer.install(template, variables)


@cache
def mineflayer() -> Path:
    """A mineflayer install in the shared cache (npm, once per cache)."""
    home = cache_dir() / "mineflayer-4.25.0"
    with file_lock(cache_dir() / "mineflayer.lock"):
        if not (home / ".zlh-installed").exists():
            home.mkdir(exist_ok=True)
            (home / "package.json").write_text(json.dumps({"name": "zlh-test-bot", "private": True}))
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZLH_")},
                   "npm_config_cache": str(cache_dir() / "downloads" / "npm")}
            result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--save-exact", MINEFLAYER],
                                    cwd=home, env=env, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
            (home / ".zlh-installed").write_text(f"{time.time()}\n")
    return home


def run_bot(host: str, port: int, username: str, message: str, timeout: float = 60.0) -> list[dict]:
    """A real offline-mode client joins `host:port`, says `message`, and quits; its events, in order."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINEFLAYER_HOME": str(mineflayer()),
           "HOME": str(cache_dir())}
    result = subprocess.run(["node", str(BOT), host, str(port), username, message], env=env,
                            capture_output=True, text=True, timeout=timeout)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, f"the bot failed ({result.returncode}): {events} {result.stderr[-2000:]}"
    return events


def ping(address: str, timeout: float = 5.0) -> JavaStatusResponse:
    """A Minecraft client's Server List Ping of `host:port` (mcstatus); raises `OSError` if nothing answers."""
    host, port = address.rsplit(":", 1)
    return JavaServer(host, int(port), timeout=timeout).status(tries=1)
