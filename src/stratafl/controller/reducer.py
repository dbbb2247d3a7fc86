"""The reducer: merge the combiners' partials into the next global model.

It runs the same collector as a combiner, on the other side of the rule: for streaming
rules the partials are folded as they arrive, weighted by the examples (or updates) each
carries, so FedAvg over M combiners equals FedAvg over all clients; for the other rules
they are spooled and merged with the rule's own ``merge`` at the end. The server optimiser
then steps from the global model towards the merged one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stratafl.aggregate import Aggregator, ServerOptState
from stratafl.params import Params
from stratafl.staging.collector import Collector


class Reducer:
    """Collects one round's partials; constructing it does no I/O."""

    def __init__(self, aggregator: Aggregator, reference: Mapping[str, np.ndarray]) -> None:
        self._aggregator = aggregator
        self._reference = reference
        self._collector = Collector.for_partials(aggregator.rule, reference)
        self._lock = asyncio.Lock()

    async def add(self, partial: Path, weight: float) -> None:
        """Collect one staged partial (consumed); partials are taken one at a time."""
        try:
            async with self._lock:
                await asyncio.to_thread(self._collector.add, partial, weight)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def result(self, state: ServerOptState) -> tuple[Params, ServerOptState]:
        """The merged partials, then one server optimiser step from the global model."""
        merged, _ = self._collector.result()
        return self._aggregator.optimizer.step(self._reference, merged, state)

    def discard(self) -> None:
        """Delete any spooled partial; call once the round is over, whatever its outcome."""
        self._collector.discard()
