"""The reducer: merge the combiners' partials into the next global model.

It runs the same collector as a combiner, on the other side of the rule: for streaming
rules the partials are folded as they arrive, weighted by the examples (or updates) each
carries (each tensor by its own weight sum, for partials of partial updates), so FedAvg
over M combiners equals FedAvg over all clients; for the other rules
they are spooled and merged with the rule's own ``merge`` at the end. When the round checks
partials against each other (three or more, `stratafl.aggregate.partial_check`), the round
runner hands the reducer only those that passed, once all have arrived. The server optimiser
then steps from the global model towards the merged one (SCAFFOLD's control variates, if
the model carries them, take the merged value).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stratafl.aggregate import Aggregator, ServerOptState
from stratafl.aggregate.server_state import model_part
from stratafl.collect.collector import Collector
from stratafl.params import Params


class Reducer:
    """Collects one round's partials; constructing it does no I/O."""

    def __init__(self, aggregator: Aggregator, reference: Mapping[str, np.ndarray]) -> None:
        self._aggregator = aggregator
        self._reference = reference
        self._collector = Collector.for_partials(aggregator.rule, reference)
        self._lock = asyncio.Lock()

    async def add(
        self, partial: Path, weight: float, tensor_weights: Mapping[str, float] | None = None
    ) -> None:
        """Collect one staged partial (consumed); partials are taken one at a time. A partial
        made of partial updates comes with each tensor's weight sum (``tensor_weights``)."""
        try:
            async with self._lock:
                await asyncio.to_thread(self._collector.add, partial, weight, tensor_weights)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def result(self, state: ServerOptState) -> tuple[Params, ServerOptState]:
        """The merged partials, then one server optimiser step from the global model.

        The optimiser steps the model only: SCAFFOLD's control variates take the merged
        value, which is their server update (c + f * mean of the c_i's changes), so a
        server learning rate is SCAFFOLD's global step size and leaves c as it should.
        """
        merged, _ = self._collector.result()
        stepped, state = self._aggregator.optimizer.step(
            model_part(self._reference), model_part(merged), state
        )
        return {name: stepped.get(name, merged[name]) for name in merged}, state

    def discard(self) -> None:
        """Delete any spooled partial; call once the round is over, whatever its outcome."""
        self._collector.discard()
