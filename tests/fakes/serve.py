"""Serve an ASGI app with uvicorn in a daemon thread on a free loopback port, for tests.

`serve_app(app)` returns a `ServedApp` once the server accepts connections
(readiness is polled against a deadline, never slept for); `stop()` shuts it down
and joins the thread. It is also a context manager. Pass `ssl_certfile` (a PEM
holding the key and the certificate chain, e.g. from `trustme`) to serve HTTPS.

The server runs on its own plain asyncio loop. `stop()` aborts the connections
clients still hold open: a keep-alive connection kept by a live response (an
exception's traceback is enough) would otherwise hold a graceful shutdown up,
for as long as a TLS close waits for the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn


@dataclass
class ServedApp:
    """A running server: its base `url` (no trailing slash), `host`, `port`, and `stop()`."""

    url: str
    host: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _sock: socket.socket = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    def stop(self) -> None:
        """Shut the server down, cutting open connections, and wait for its thread (idempotent)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                self._loop.call_soon_threadsafe(self._abort_connections)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=15.0)
        self._sock.close()

    def _abort_connections(self) -> None:
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    def __enter__(self) -> ServedApp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_app(
    app: Any,
    *,
    host: str = "127.0.0.1",
    ssl_certfile: Path | str | None = None,
    timeout: float = 15.0,
) -> ServedApp:
    """Start `app` on a free port of `host`; return once it accepts TCP connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    port = sock.getsockname()[1]
    # No log_config: uvicorn would reconfigure the process's shared loggers. No websockets: none is needed.
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="none",
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()

    def run() -> None:
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"fake-{port}", daemon=True)
    scheme = "https" if ssl_certfile else "http"
    served = ServedApp(f"{scheme}://{host}:{port}", host, port, server, thread, sock, loop)
    thread.start()
    deadline = time.monotonic() + timeout
    while True:
        if not thread.is_alive():
            served.stop()
            raise RuntimeError(f"the server for {app!r} exited during start-up")
        if server.started:
            try:
                socket.create_connection((host, port), timeout=1.0).close()
                return served
            except OSError:
                pass
        if time.monotonic() >= deadline:
            served.stop()
            raise RuntimeError(f"the server for {app!r} did not start within {timeout}s")
        time.sleep(0.005)  # polling interval, bounded by the deadline
