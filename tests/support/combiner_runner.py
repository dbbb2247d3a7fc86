"""A combiner's round runner without a server: its model comes from a file, its clients
are registered in memory, so a test plays the clients' streams itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.modelfile.codec import save_params
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import file_chunks, header_to_proto, send_model
from tests.support.inprocess import aiter_of

MODEL = {"w": np.zeros(8, np.float32)}
"""The global model every round starts from: eight zeros."""


def combiner_runner(folder: Path, **limits: float) -> tuple[CombinerRoundRunner, ClientRegistry]:
    """A runner for combiner "k" with room for 10 clients, serving `MODEL` from ``folder``,
    and the registry its clients connect to; ``limits`` go to the runner."""
    save_params(folder / "global.safetensors", MODEL)

    def download(model_id: str) -> AsyncIterator[object]:
        specs, data = file_chunks(folder / "global.safetensors")
        return aiter_of(send_model(pb.ModelChunk, header_to_proto(model_id, specs), data))

    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    cache = ModelCache(folder / "cache", download)
    runner = CombinerRoundRunner("k", registry, cache, folder / "updates", **limits)
    return runner, registry
