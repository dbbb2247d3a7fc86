"""The reducer: merge the combiners' partials into the next global model.

Each partial arrives as a stream (header with the weight it carries, then its raw bytes)
and is staged to disk and checked. For streaming rules the partials are folded weighted by
that weight as they arrive, so FedAvg over M combiners equals FedAvg over all clients; for
the other rules they are spooled and merged with the rule's own ``merge`` at the end. The
server optimiser then steps from the global model towards the merged one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import numpy as np

from stratafl.aggregate import Aggregator, ServerOptState, WeightedMeanFold
from stratafl.errors import ModelFormatError
from stratafl.params import Params, TensorSpec, check_same_layout
from stratafl.proto import stratafl_pb2 as pb
from stratafl.staging.collector import Collector
from stratafl.transport.streams import data_of, specs_from_proto, write_file


class Reducer:
    """Collects one round's partials; constructing it does no I/O."""

    def __init__(
        self,
        specs: list[TensorSpec],
        staging: Path,
        aggregator: Aggregator,
        reference: Mapping[str, np.ndarray],
    ) -> None:
        self._specs = specs
        self._staging = staging
        self._aggregator = aggregator
        self._reference = reference
        rule = aggregator.rule
        self._collector = Collector(
            specs,
            WeightedMeanFold(specs) if rule.streaming else None,
            lambda partials, weights: rule.merge(partials, weights, reference),
        )
        self._lock = asyncio.Lock()
        self.bytes_received = 0

    async def receive(self, messages: AsyncIterator[pb.RoundResultChunk]) -> pb.RoundResultHeader:
        """Consume one combiner's RunRound stream; collect its partial if it has one."""
        first = await messages.__anext__()
        if first.WhichOneof("part") != "header":
            raise ModelFormatError("a combiner's result stream did not start with its header")
        header = first.header
        self.bytes_received += first.ByteSize()
        if header.error or header.contributors == 0 or not header.model.tensors:
            return header
        specs = specs_from_proto(header.model)
        check_same_layout(self._specs, specs)
        path = self._staging / f"partial-{uuid.uuid4().hex}.safetensors"
        try:
            self.bytes_received += await write_file(path, specs, data_of(messages))
            async with self._lock:
                await asyncio.to_thread(self._collector.add, path, header.total_weight)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return header

    def result(self, state: ServerOptState) -> tuple[Params, ServerOptState]:
        """The merged partials, then one server optimiser step from the global model."""
        merged, _ = self._collector.result()
        return self._aggregator.optimizer.step(self._reference, merged, state)

    def discard(self) -> None:
        """Delete any spooled partial; call once the round is over, whatever its outcome."""
        self._collector.discard()
