"""Fixed-window counters for rate limits: in this process, or in Redis shared by every API process.

A window opens with its first hit and lasts `window` seconds; `hit` adds to it and returns the
count so far, `peek` reads it without adding. In Redis one Lua script does the increment, the
expiry and the read atomically, so any number of API processes share one count per key.

Redis is an aid, never a dependency: if it does not answer within a quarter of a second, the
counters fall back to this process's own (the API keeps serving, each process limiting on its
own), log a warning, and try Redis again after a few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

WINDOW = 60.0
REDIS_RETRY_AFTER = 5.0  # seconds without Redis after a failure
KEY_PREFIX = "zlh:ratelimit:"

# KEYS[1] the counter; ARGV[1] the window in ms; ARGV[2] how much to add (0: only read).
_SCRIPT = """
local n
if tonumber(ARGV[2]) > 0 then
  n = redis.call('INCRBY', KEYS[1], ARGV[2])
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local ttl = redis.call('PTTL', KEYS[1])
if n > 0 and ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


@dataclass(frozen=True)
class Window:
    """A key's window after a hit or a peek: `count` so far, `limit`, and seconds until it resets."""

    count: int
    limit: int
    reset_after: float

    @property
    def remaining(self) -> int:
        return max(self.limit - self.count, 0)

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window resets (at least 1), for `Retry-After`."""
        return max(1, math.ceil(self.reset_after))

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.retry_after)}


class Windows(Protocol):
    """Counters per key; `local` tells whether a call does no I/O (so it may run on the event loop)."""

    local: bool

    def hit(self, key: str, limit: int, cost: int = 1) -> Window: ...
    def peek(self, key: str, limit: int) -> Window: ...
    def close(self) -> None: ...


class LocalWindows:
    """This process's counters (valid for a single API process)."""

    local = True

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (window start, count)

    def hit(self, key: str, limit: int, cost: int = 1) -> Window:
        return self.count(key, limit, cost)

    def peek(self, key: str, limit: int) -> Window:
        return self.count(key, limit, 0)

    def count(self, key: str, limit: int, cost: int) -> Window:
        """Add `cost` (0: only read) to `key`'s window and return it."""
        now = self.clock()
        with self._lock:
            started, count = self._counts.get(key, (now, 0))
            if now - started >= self.window:
                started, count = now, 0
            count += cost
            if count:
                self._counts[key] = (started, count)
            if len(self._counts) > 50_000:
                self._prune(now)
        return Window(count, limit, self.window - (now - started))

    def _prune(self, now: float) -> None:
        self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.window}

    def close(self) -> None:
        """Nothing to release."""


class RedisWindows:
    """Counters in Redis, shared by every API process; this process's own while Redis does not answer."""

    local = False

    def __init__(self, url: str, window: float = WINDOW, clock: Callable[[], float] = time.monotonic,
                 prefix: str = KEY_PREFIX) -> None:
        import redis

        self.window = window
        self.prefix = prefix
        self.clock = clock
        self.fallback = LocalWindows(window, clock)
        self._redis = redis.Redis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        self._script = self._redis.register_script(_SCRIPT)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, cost: int = 1) -> Window:
        return self._count(key, limit, cost)

    def peek(self, key: str, limit: int) -> Window:
        return self._count(key, limit, 0)

    def _count(self, key: str, limit: int, cost: int) -> Window:
        if self.clock() < self._down_until:
            return self.fallback.count(key, limit, cost)
        try:
            count, ttl_ms = self._script(keys=[self.prefix + key], args=[int(self.window * 1000), cost])
        except Exception as exc:  # any Redis failure: never turn the API off over it
            with self._lock:
                if self.clock() >= self._down_until:
                    log.warning("rate limits: Redis did not answer (%s); counting in this process for %.0fs",
                                type(exc).__name__, REDIS_RETRY_AFTER)
                self._down_until = self.clock() + REDIS_RETRY_AFTER
            return self.fallback.count(key, limit, cost)
        ttl = int(ttl_ms) / 1000 if int(ttl_ms) > 0 else self.window
        return Window(int(count), limit, ttl)

    def close(self) -> None:
        self._redis.close()


def build_windows(redis_url: str | None) -> LocalWindows | RedisWindows:
    """Redis when `ZLH_REDIS_URL` is set (shared by every API process), else this process's counters."""
    return RedisWindows(redis_url) if redis_url else LocalWindows()
