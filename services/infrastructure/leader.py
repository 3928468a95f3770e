"""The controller's leader lock: a lease in Redis with a random token.

- acquire: `SET key token NX PX ttl`;
- renew: compare-and-extend (a Lua script: `PEXPIRE` only if the value is still our token);
- release: compare-and-delete (same, with `DEL`).

Only the holder of the token can extend or release the lease, so a paused process
that wakes up after its lease expired cannot take back a lease someone else holds.
The lease alone does not make a stale leader harmless: that is the epoch's job
(`domain.repair.ControllerLeadership`), checked by the store on every write.

Without `ZLH_REDIS_URL`, `InProcessLock` gives the same interface for one process.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

KEY = "zlh:controller:leader"

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockUnavailableError(Exception):
    """The lock's backend cannot be reached: nobody can be sure who leads, so nobody acts."""


class LeaderLock(Protocol):
    ttl: float

    def acquire(self) -> bool:
        """Take the lease if nobody holds it; True if we hold it now."""
        ...

    def renew(self) -> bool:
        """Extend our lease; False if it is no longer ours."""
        ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class RedisLeaderLock:
    def __init__(self, url: str, ttl: float = 15.0, key: str = KEY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.ttl, self.key = ttl, key
        self.token = secrets.token_hex(16)
        self._extend = self.client.register_script(_EXTEND)
        self._release = self.client.register_script(_RELEASE)
        self.clock = clock

    @property
    def ttl_ms(self) -> int:
        return max(int(self.ttl * 1000), 1)

    def acquire(self) -> bool:
        try:
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                return True
            return self.renew()  # we may hold it already
        except redis.RedisError as exc:
            raise LockUnavailableError(str(exc)) from exc

    def renew(self) -> bool:
        try:
            return bool(self._extend(keys=[self.key], args=[self.token, self.ttl_ms]))
        except redis.RedisError as exc:
            raise LockUnavailableError(str(exc)) from exc

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else it expires on its own
            self._release(keys=[self.key], args=[self.token])

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self.client.close()


class InProcessLock:
    """A lease valid within one process (`ZLH_REDIS_URL` unset): every controller of this process shares it."""

    _guard = threading.Lock()
    _leases: dict[str, tuple[str, float]] = {}

    def __init__(self, ttl: float = 15.0, key: str = KEY, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.key, self.clock = ttl, key, clock
        self.token = secrets.token_hex(16)

    def acquire(self) -> bool:
        with self._guard:
            held = self._leases.get(self.key)
            if held is None or held[1] <= self.clock() or held[0] == self.token:
                self._leases[self.key] = (self.token, self.clock() + self.ttl)
                return True
            return False

    def renew(self) -> bool:
        with self._guard:
            held = self._leases.get(self.key)
            if held is None or held[0] != self.token or held[1] <= self.clock():
                return False
            self._leases[self.key] = (self.token, self.clock() + self.ttl)
            return True

    def release(self) -> None:
        with self._guard:
            held = self._leases.get(self.key)
            if held is not None and held[0] == self.token:
                del self._leases[self.key]

    def close(self) -> None:
        pass


def build_lock(redis_url: str | None, ttl: float, prefix: str = "zlh") -> LeaderLock:
    """The controller's leader lock: in Redis under `PREFIX:controller:leader`, or in-process without Redis."""
    key = f"{prefix}:controller:leader"
    return RedisLeaderLock(redis_url, ttl, key=key) if redis_url else InProcessLock(ttl, key=key)
