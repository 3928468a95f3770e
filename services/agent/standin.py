"""The stand-in server programs the local driver runs: a game server and an IDE.

Run as ``python -m services.agent.standin game|dev --port N --dir FILES --runtime RUNTIME``.

FILES is the instance's customer-visible file root; on start the game stand-in
creates a small ``server.properties`` there if it is missing (as a Minecraft
server would). RUNTIME (default: FILES) holds the runtime files, out of the
customer's reach:
- ``server.pid``: the process id, written on start, removed on clean exit;
- ``console.log``: console output, one flushed line per event;
- ``console.in``: a FIFO of console commands (``say TEXT``, ``stop``).

``game`` is a TCP server on 127.0.0.1:PORT that greets each client and logs each
connection; ``dev`` is an HTTP server whose ``GET /`` answers a small HTML page.
``stop`` on the console or SIGTERM/SIGINT exit with status 0; failing to bind the
port exits with status 2. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PID_FILE = "server.pid"
CONSOLE_LOG = "console.log"
CONSOLE_IN = "console.in"
PROPERTIES_FILE = "server.properties"
DEFAULT_PROPERTIES = "motd=A ZLH server\nmax-players=20\n"
#: The first bytes the game stand-in sends to every client; the driver checks them.
GREETING = b"ZLH stand-in game server: welcome\n"
IDE_TITLE = "ZLH IDE (stand-in)"
IDE_PAGE = (
    f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{IDE_TITLE}</title></head>\n'
    f"<body><h1>{IDE_TITLE}</h1><p>This stands in for a dev container's IDE.</p></body></html>\n"
).encode()
MAX_CLIENTS = 256

Callback = Callable[[Any], None]


class Console:
    """Appends `[server] ...` lines to console.log; thread-safe, flushed per line."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def log(self, text: str) -> None:
        with self._lock:
            self._file.write(f"[server] {text}\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class Loop:
    """A selectors loop over the console FIFO, a signal wake-up pipe and (game) the sockets."""

    def __init__(self, console: Console, fifo_fd: int) -> None:
        self.console = console
        self.stopping = False
        self._signalled: int | None = None
        self.selector = selectors.DefaultSelector()
        self._fifo_fd = fifo_fd
        self._pending = b""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(fifo_fd, selectors.EVENT_READ, self._on_fifo)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop the loop; the wake-up fd interrupts `select`."""
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only set a flag: the handler may interrupt a console write holding its lock.
        self._signalled = signum

    def _on_wake(self, _fd: object) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _on_fifo(self, _fd: object) -> None:
        try:
            chunk = os.read(self._fifo_fd, 4096)
        except BlockingIOError:
            return
        self._pending += chunk
        while b"\n" in self._pending and not self.stopping:
            raw, self._pending = self._pending.split(b"\n", 1)
            self.execute(raw.decode("utf-8", "replace").strip())

    def execute(self, line: str) -> None:
        """Run one console command."""
        if not line:
            return
        command, _, rest = line.partition(" ")
        if command == "say":
            self.console.log(rest.strip())
        elif command == "stop":
            self.console.log("stopping")
            self.stopping = True
        else:
            self.console.log(f"unknown command: {command}")

    def run(self) -> None:
        while not self.stopping:
            for key, _events in self.selector.select():
                key.data(key.fileobj)
                if self.stopping:
                    break
            if self._signalled is not None and not self.stopping:
                self.console.log(f"stopping ({signal.Signals(self._signalled).name})")
                self.stopping = True

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class GameServer:
    """The game stand-in: accepts TCP clients, greets them, logs each connection."""

    def __init__(self, port: int, loop: Loop) -> None:
        self.loop = loop
        self.clients: set[socket.socket] = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind(("127.0.0.1", port))
            self.sock.listen(64)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def start(self) -> None:
        self.loop.selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    def _on_accept(self, _sock: object) -> None:
        try:
            conn, (host, port) = self.sock.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        self.loop.console.log(f"connection from {host}:{port}")
        if len(self.clients) >= MAX_CLIENTS:
            conn.close()
            return
        conn.setblocking(False)
        try:
            conn.send(GREETING)
        except OSError:
            conn.close()
            return
        self.clients.add(conn)
        self.loop.selector.register(conn, selectors.EVENT_READ, self._on_client)

    def _on_client(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.selector.unregister(conn)
            self.clients.discard(conn)
            conn.close()

    def close(self) -> None:
        for conn in self.clients:
            conn.close()
        self.clients.clear()
        self.sock.close()


class _IdeHandler(BaseHTTPRequestHandler):
    server: _IdeHttpServer
    server_version = "ZLHStandIn/1"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(IDE_PAGE)))
        self.end_headers()
        self.wfile.write(IDE_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.console.log(f"{self.address_string()} {format % args}")


class _IdeHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, console: Console) -> None:
        self.console = console
        super().__init__(("127.0.0.1", port), _IdeHandler)


class DevServer:
    """The IDE stand-in: an HTTP server in a background thread."""

    def __init__(self, port: int, loop: Loop) -> None:
        self.httpd = _IdeHttpServer(port, loop.console)
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,), name="ide")

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()


def open_fifo(path: Path) -> int:
    """Open (creating if needed) the command FIFO read-write, non-blocking, so it never sees EOF."""
    try:
        if not stat.S_ISFIFO(path.lstat().st_mode):
            path.unlink()
            os.mkfifo(path, 0o600)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


def write_pid(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid(path: Path) -> None:
    """Remove the pid file if it still names this process."""
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def ensure_properties(files_dir: Path) -> None:
    """Create `server.properties` with defaults if it is missing (never overwrite)."""
    path = files_dir / PROPERTIES_FILE
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(DEFAULT_PROPERTIES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="standin", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["game", "dev"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="the instance's files")
    parser.add_argument("--runtime", type=Path, default=None, help="pid file, console log and FIFO")
    args = parser.parse_args(argv)
    files_dir: Path = args.dir
    directory: Path = args.runtime or files_dir
    files_dir.mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    if args.kind == "game":
        ensure_properties(files_dir)

    console = Console(directory / CONSOLE_LOG)
    fifo_fd = open_fifo(directory / CONSOLE_IN)
    loop = Loop(console, fifo_fd)
    loop.install_signals()
    server: GameServer | DevServer
    try:
        server = GameServer(args.port, loop) if args.kind == "game" else DevServer(args.port, loop)
    except OSError as exc:
        console.log(f"cannot listen on 127.0.0.1:{args.port}: {exc}")
        print(f"standin: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        loop.close()
        os.close(fifo_fd)
        console.close()
        return 2

    write_pid(directory / PID_FILE)
    try:
        server.start()
        console.log(f"{args.kind} stand-in listening on 127.0.0.1:{args.port} (pid {os.getpid()})")
        loop.run()
    finally:
        server.close()
        loop.close()
        os.close(fifo_fd)
        remove_pid(directory / PID_FILE)
        console.log("stopped")
        console.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
