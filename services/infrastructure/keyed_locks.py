"""In-process locks by key: commands that would conflict on one stream take turns instead of racing.

A customer's creates all append to the customer's instance `Quota` (services/quotas.py): run at once,
every one but the first fails optimistic concurrency and starts over, so 32 concurrent creates cost
about 32 attempts each. Taking turns per customer inside the process makes each attempt succeed the
first time. This is only a scheduling aid: correctness still comes from the store (optimistic
concurrency), across processes too. Striped (a fixed number of locks), so memory stays bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

STRIPES = 256


class KeyedLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def __call__(self, key: Hashable) -> threading.Lock:
        """The lock for `key` (keys may share one: a stripe)."""
        return self._locks[hash(key) % len(self._locks)]


#: Per customer: the commands that write the customer's quota (`request_instance`).
CUSTOMER_TURNS = KeyedLocks()
