"""Readiness probes: is the server answering the way its template says it will?

- `minecraft`: a Minecraft Server List Ping (status request) answers, through `mcstatus`;
- `http`: `GET path` answers 2xx (the template picks a path only this instance answers, e.g.
  JupyterLab's `/api/status?token=...`);
- `console`: a line of the console log written since the server started matches a pattern.

Each probe makes one attempt and raises `OSError` when it is not ready (yet); the driver polls.
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path

from domain.templates import Ready


def probe(ready: Ready, host: str, port: int, timeout: float, console_log: Path, console_offset: int) -> str:
    """One attempt; returns a short description of what answered, or raises `OSError`."""
    if ready.check == "minecraft":
        return _server_list_ping(host, port, timeout)
    if ready.check == "http":
        return _http(host, port, ready.path, timeout)
    return _console(console_log, console_offset, ready.pattern)


def _server_list_ping(host: str, port: int, timeout: float) -> str:
    from mcstatus import JavaServer  # imported on first use: only game nodes need it

    try:
        status = JavaServer(host, port, timeout=timeout).status(tries=1)
    except OSError:
        raise
    except Exception as exc:  # a malformed answer: not (yet) a Minecraft server on that port
        raise OSError(f"Server List Ping: {type(exc).__name__}: {exc}") from exc
    return f"Minecraft {status.version.name} (protocol {status.version.protocol}), " \
           f"{status.players.online}/{status.players.max} players"


def _http(host: str, port: int, path: str, timeout: float) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"GET: {exc!r}") from exc
    finally:
        conn.close()
    if not 200 <= response.status < 300:
        raise OSError(f"GET answered {response.status}")
    return f"HTTP {response.status}"


def _console(path: Path, offset: int, pattern: str) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError as exc:
        raise OSError("no console output yet") from exc
    regex = re.compile(pattern)
    for line in text.splitlines():
        if regex.search(line):
            return f"console: {line.strip()[:200]}"
    raise OSError(f"no console line matches {pattern!r} yet")
