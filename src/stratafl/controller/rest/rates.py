"""Request rates on the REST API: one token bucket per caller, so no one identity (or, on
the routes that need no token, no one address) can crowd out the others.

Per caller, never global: an honest swarm of 10,000 clients each calls ``/assign`` about
twice an hour, while one hostile token looping on it is held to its own bucket. The
defaults are generous (a dashboard's bursts, a script's loops stay well inside them); the
answer beyond them is 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from stratafl.errors import ConfigError, RateLimited

__all__ = ["DEFAULT_RATE_LIMITS", "RateLimiter", "RateLimits"]


@dataclass(frozen=True)
class RateLimits:
    """How fast one caller may call: ``per_second`` on average, ``burst`` at once."""

    per_second: float = 200.0
    burst: float = 2000.0
    max_callers: int = 100_000
    """Buckets kept (least recently used dropped first): bounds memory, not callers."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_second) and self.per_second > 0):
            raise ConfigError(f"per_second must be a positive number, got {self.per_second}")
        if not (math.isfinite(self.burst) and self.burst >= 1):
            raise ConfigError(f"burst must be at least 1, got {self.burst}")
        if self.max_callers < 1:
            raise ConfigError(f"max_callers must be at least 1, got {self.max_callers}")


DEFAULT_RATE_LIMITS = RateLimits()


class RateLimiter:
    """Token buckets keyed by caller; `take` spends one request or raises `RateLimited`.
    Used from the event loop only (no lock: each call runs to completion)."""

    def __init__(
        self, limits: RateLimits = DEFAULT_RATE_LIMITS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """caller -> (requests it may still send now, when that was computed)"""

    def take(self, caller: str) -> None:
        """Count one request of ``caller`` (e.g. ``client hospital-3``, ``address
        10.0.0.7``); `RateLimited` naming when to retry if it is over its rate."""
        limits, now = self.limits, self._clock()
        left, then = self._buckets.pop(caller, (limits.burst, now))
        left = min(limits.burst, left + max(0.0, now - then) * limits.per_second)
        if left < 1:
            self._buckets[caller] = (left, now)
            wait = (1 - left) / limits.per_second
            raise RateLimited(
                f"{caller} sends more than {limits.per_second:g} requests a second; retry "
                f"after {wait:.2f} s (Retry-After) and slow down",
                retry_after=wait,
            )
        self._buckets[caller] = (left - 1, now)
        if len(self._buckets) > limits.max_callers:
            self._buckets.popitem(last=False)
