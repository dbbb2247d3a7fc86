"""What the client protocol counts: per client runtime, or per swarm process (all its
clients add to one `ClientCounters`, which `stratafl.swarm.stats.SwarmStats` extends)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientCounters"]


@dataclass
class ClientCounters:
    """Counters of the client protocol; plain ints."""

    connected: int = 0
    """Clients whose task stream is open now."""
    streams_opened: int = 0
    tasks: int = 0
    updates_accepted: int = 0
    updates_refused: int = 0
    validations: int = 0
    app_failures: int = 0
    ungranted: int = 0
    """Tasks refused because their round grant did not verify (`security.grants`)."""
    """Tasks whose app code raised (reported to the combiner as failures)."""
    stream_errors: int = 0
    """Task streams that ended with an error (combiner gone, refused, moved...)."""
    assign_errors: int = 0
    """Refused or failed requests for a combiner."""
    moves: int = 0
    """Times the controller moved a client to even the load (its stream ended ABORTED)."""
