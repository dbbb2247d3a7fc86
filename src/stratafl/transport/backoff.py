"""How long every reconnect loop waits: capped exponential backoff with full jitter.

A fleet of thousands of clients that lose their combiner at the same moment must not come
back in lockstep: with full jitter each waits ``uniform(0, min(cap, base * 2**n))`` after
its n-th failure in a row (Brooker, "Exponential Backoff And Jitter", AWS Architecture
Blog, 2015), which spreads the reconnects over the whole window instead of stacking them
on its edges. A loop resets its backoff once a connection works again, so the next outage
starts from short waits. The random source is injected, so tests can pin it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from stratafl.errors import ConfigError

MAX_DOUBLINGS = 62
"""Past this many failures the window is the cap anyway; stops ``2**n`` from growing."""


@dataclass
class Backoff:
    """The waits of one reconnect loop; `reset` after a success, `next_delay` after a failure."""

    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0
    """Failures in a row since the last `reset`."""

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ConfigError(
                f"a backoff needs 0 < base <= cap, got base={self.base} and cap={self.cap}"
            )

    def window(self) -> float:
        """The longest the next wait may be: ``min(cap, base * 2**failures)``."""
        return min(self.cap, self.base * 2 ** min(self.failures, MAX_DOUBLINGS))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt (uniform in the window); counts a failure."""
        delay = self.rng.uniform(0.0, self.window())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """A connection worked: the next failure waits at most ``base`` again."""
        self.failures = 0
