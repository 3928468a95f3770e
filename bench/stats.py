"""What every measurement reports: a count, a wall time, per-operation latencies, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Typography of the printed tables: an en dash in ranges, a multiplication sign after ratios (escaped for RUF001).
EN_DASH, TIMES = "\u2013", "\u00d7"


@dataclass
class Result:
    """One measured row: `n` operations in `seconds` of wall time, with each operation's latency."""

    name: str
    n: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per operation
    errors: int = 0
    note: str = ""

    @property
    def rate(self) -> float:
        """Operations per second over the whole run (wall clock)."""
        return self.n / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        """The nearest-rank `p`-th percentile latency, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
        return ordered[rank - 1] * 1000

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)
