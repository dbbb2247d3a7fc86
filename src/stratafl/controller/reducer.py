"""The reducer: merge the combiners' partials into the next global model.

Each partial arrives as a stream (header with its total example weight, then the partial
mean's raw bytes); it is staged to disk, checked against the global model's layout, and
folded weighted by examples, so FedAvg over M combiners equals FedAvg over all clients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from stratafl.aggregate import WeightedMeanFold
from stratafl.errors import ModelFormatError
from stratafl.modelfile import open_params
from stratafl.params import Params, TensorSpec, check_same_layout
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import data_of, specs_from_proto, write_file


class Reducer:
    def __init__(self, specs: list[TensorSpec], staging: Path) -> None:
        self._specs = specs
        self._staging = staging
        self._fold = WeightedMeanFold(specs)
        self._lock = asyncio.Lock()
        self.bytes_received = 0

    async def receive(self, messages: AsyncIterator[pb.RoundResultChunk]) -> pb.RoundResultHeader:
        """Consume one combiner's RunRound stream; fold its partial if it has one."""
        first = await messages.__anext__()
        if first.WhichOneof("part") != "header":
            raise ModelFormatError("a combiner's result stream did not start with its header")
        header = first.header
        self.bytes_received += first.ByteSize()
        if header.contributors == 0 or not header.model.tensors:
            return header
        specs = specs_from_proto(header.model)
        check_same_layout(self._specs, specs)
        path = self._staging / f"partial-{uuid.uuid4().hex}.safetensors"
        try:
            self.bytes_received += await write_file(path, specs, data_of(messages))
            async with self._lock:
                await asyncio.to_thread(self._fold.add, open_params(path), header.total_weight)
        finally:
            path.unlink(missing_ok=True)
        return header

    @property
    def total_weight(self) -> float:
        return self._fold.total_weight

    def result(self) -> Params:
        return self._fold.result()[0]
