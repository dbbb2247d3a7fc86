"""Global models fetched once from the controller and served to every client from disk."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path

from stratafl.errors import ModelFormatError
from stratafl.modelfile import read_header
from stratafl.params import TensorSpec
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.transport.streams import data_of, specs_from_proto, write_file


class ModelCache:
    """Keeps the newest ``keep`` models on disk; concurrent requests share one download."""

    def __init__(self, folder: Path, controller: pb_grpc.ControllerStub, keep: int = 3) -> None:
        self._folder = folder
        self._controller = controller
        self._keep = keep
        self._entries: OrderedDict[str, asyncio.Future[tuple[Path, list[TensorSpec]]]] = (
            OrderedDict()
        )

    async def get(self, model_id: str) -> tuple[Path, list[TensorSpec]]:
        entry = self._entries.get(model_id)
        if entry is None:
            entry = asyncio.ensure_future(self._fetch(model_id))
            self._entries[model_id] = entry
            self._evict()
        try:
            return await asyncio.shield(entry)
        except BaseException:
            if entry.done() and self._entries.get(model_id) is entry:
                del self._entries[model_id]
            raise

    def cached_path(self, model_id: str) -> Path | None:
        entry = self._entries.get(model_id)
        if entry is None or not entry.done() or entry.exception() is not None:
            return None
        return entry.result()[0]

    async def _fetch(self, model_id: str) -> tuple[Path, list[TensorSpec]]:
        path = self._folder / f"{model_id}.safetensors"
        call = self._controller.DownloadModel(pb.ModelRequest(model_id=model_id))
        messages = call.__aiter__()
        first = await messages.__anext__()
        if first.WhichOneof("part") != "header":
            raise ModelFormatError("the controller's model stream did not start with a header")
        specs = specs_from_proto(first.header)
        await write_file(path, specs, data_of(messages))
        with open(path, "rb") as stream:
            read_header(stream)
        return path, specs

    def _evict(self) -> None:
        while len(self._entries) > self._keep:
            model_id, entry = self._entries.popitem(last=False)
            if entry.done() and entry.exception() is None:
                entry.result()[0].unlink(missing_ok=True)
            else:
                entry.cancel()
            del model_id
