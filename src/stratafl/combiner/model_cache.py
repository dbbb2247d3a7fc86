"""Global models fetched once from the controller and served to every client from disk."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from stratafl.errors import UnavailableError
from stratafl.params import TensorSpec
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import receive_model

Download = Callable[[str], AsyncIterator[pb.ModelChunk]]
"""Opens the controller's stream of one model: ``model_id -> messages``."""


@dataclass(frozen=True)
class CachedModel:
    path: Path
    specs: list[TensorSpec]
    wire_bytes: int
    """What fetching it cost on the controller link (paid once, by the first asker)."""


class ModelCache:
    """Keeps the newest ``keep`` models on disk; concurrent requests share one download."""

    def __init__(self, folder: Path, download: Download, keep: int = 3) -> None:
        self._folder = folder
        self._download = download
        self._keep = keep
        self._entries: OrderedDict[str, asyncio.Future[CachedModel]] = OrderedDict()

    async def get(self, model_id: str) -> tuple[CachedModel, int]:
        """The model, and the bytes this call fetched (0 when it was cached or shared).

        Raises `UnavailableError` when the controller cannot send it.
        """
        entry = self._entries.get(model_id)
        fetched_here = entry is None
        if entry is None:
            entry = asyncio.ensure_future(self._fetch(model_id))
            self._entries[model_id] = entry
            self._evict()
        try:
            cached = await asyncio.shield(entry)
        except BaseException:
            if entry.done() and self._entries.get(model_id) is entry:
                del self._entries[model_id]
            raise
        return cached, cached.wire_bytes if fetched_here else 0

    def cached_path(self, model_id: str) -> Path | None:
        entry = self._entries.get(model_id)
        if entry is None or not entry.done() or entry.exception() is not None:
            return None
        return entry.result().path

    async def _fetch(self, model_id: str) -> CachedModel:
        path = self._folder / f"{model_id}.safetensors"
        try:
            incoming = await receive_model(self._download(model_id), "the controller's model")
            specs = await incoming.save(path, incoming.header)
        except grpc.aio.AioRpcError as exc:
            raise UnavailableError(
                f"cannot fetch model {model_id} from the controller: {exc.details()}"
            ) from exc
        return CachedModel(path, specs, incoming.wire_bytes)

    def _evict(self) -> None:
        while len(self._entries) > self._keep:
            _, entry = self._entries.popitem(last=False)
            if entry.done() and entry.exception() is None:
                entry.result().path.unlink(missing_ok=True)
            else:
                entry.cancel()
