"""What the client protocol counts: per client runtime, or per swarm process (all its
clients add to one `ClientCounters`, which `stratafl.swarm.stats.SwarmStats` extends)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ClientCounters", "TaskDone"]


@dataclass(frozen=True)
class TaskDone:
    """One task a client finished, as its log line and its metrics tell it."""

    session_id: str
    round: int
    kind: str
    """train or validate."""
    examples: int
    """What the app trained on (0 for a validation)."""
    seconds: float
    """From the task's arrival to its answer: download, the app's work, upload."""
    metrics: Mapping[str, float] = field(default_factory=dict)


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
    """Tasks whose app code raised (reported to the combiner as failures)."""
    ungranted: int = 0
    """Tasks refused because their round grant did not verify (`security.grants`)."""
    stream_errors: int = 0
    """Task streams that ended with an error (combiner gone, refused, moved...)."""
    assign_errors: int = 0
    """Refused or failed requests for a combiner."""
    moves: int = 0
    """Times the controller moved a client to even the load (its stream ended ABORTED)."""
