"""Models as chunked streams of messages: a header, then raw bytes, 1 MiB at most each.

One pair for every tier and every stream (model downloads, client updates, combiner
partials): `send_model` turns a header and raw bytes into messages, `receive_model` checks
that a stream starts with its header and hands the bytes on, to a model file on disk
(bounded memory: `IncomingModel.save`) or into arrays in memory (for clients:
`receive_params`, and `receive_download` for asyncio). Chunking lives here; the file codec
lives in `stratafl.modelfile.codec`.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generic, Literal, Protocol, TypeVar

import numpy as np

from stratafl.errors import ModelFormatError
from stratafl.modelfile.codec import (
    ModelFileWriter,
    params_from_bytes,
    read_pieces,
    tensor_bytes,
)
from stratafl.modelfile.header import read_header
from stratafl.params import Params, TensorSpec, check_same_layout, total_bytes
from stratafl.proto import stratafl_pb2 as pb

CHUNK_BYTES = 1024 * 1024
"""Largest payload of one message on the wire: 1 MiB. gRPC's Python stacks move a 4 MiB
message four to seven times slower than four of 1 MiB (an asyncio upload of 4 MB: 22.6 ms
against 3.2 ms; a download: 19.8 ms against 4.5 ms; `benchmarks/chunk_sizes.py`), and a
smaller chunk bounds each stream's memory tighter."""

H = TypeVar("H", covariant=True)
M = TypeVar("M")


class Chunk(Protocol[H]):
    """A message of a model stream: ``oneof part { header; bytes data; }``."""

    @property
    def header(self) -> H: ...

    @property
    def data(self) -> bytes: ...

    def WhichOneof(self, group: Literal["part"], /) -> str | None: ...  # noqa: N802

    def ByteSize(self) -> int: ...  # noqa: N802


def header_to_proto(model_id: str, specs: Sequence[TensorSpec]) -> pb.ModelHeader:
    return pb.ModelHeader(
        model_id=model_id,
        tensors=[pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs],
    )


def specs_from_proto(header: pb.ModelHeader) -> list[TensorSpec]:
    """The layout a peer announced, refused if it could not describe a real model."""
    specs = [TensorSpec(t.name, t.dtype, tuple(int(d) for d in t.shape)) for t in header.tensors]
    for spec in specs:
        spec.numpy_dtype  # noqa: B018 - raises ModelFormatError on an unknown dtype code
        if any(d < 0 for d in spec.shape):
            raise ModelFormatError(f"tensor {spec.name!r} has a negative dimension {spec.shape}")
    if len({s.name for s in specs}) != len(specs):
        raise ModelFormatError("model header names a tensor twice")
    return specs


# -- sending ------------------------------------------------------------------------------


def pack_chunks(
    pieces: Iterable[bytes | memoryview], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """Re-cut byte pieces into chunks of exactly ``chunk_bytes`` (the last may be shorter).

    Large tensors are sliced without copying the whole tensor; small ones are packed
    together so that a model of many small tensors is still sent in few messages.
    """
    pending = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        start = 0
        while start < len(view):
            part = view[start : start + chunk_bytes - len(pending)]
            start += len(part)
            if not pending and len(part) == chunk_bytes:
                yield bytes(part)
                continue
            pending += part
            if len(pending) == chunk_bytes:
                yield bytes(pending)
                pending.clear()
    if pending:
        yield bytes(pending)


def params_chunks(
    params: Mapping[str, np.ndarray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """The raw bytes of in-memory ``params``, in chunks of at most ``chunk_bytes``."""
    return pack_chunks(tensor_bytes(params), chunk_bytes)


def file_chunks(
    path: Path, chunk_bytes: int = CHUNK_BYTES
) -> tuple[list[TensorSpec], Iterator[bytes]]:
    """The layout of a model file and its raw data in chunks, read as they are consumed."""
    return stream_chunks(open(path, "rb"), chunk_bytes)  # noqa: SIM115 - closed by it


def stream_chunks(
    stream: BinaryIO, chunk_bytes: int = CHUNK_BYTES
) -> tuple[list[TensorSpec], Iterator[bytes]]:
    """The layout of a model file opened anywhere (a local file, an fsspec file on S3...)
    and its raw data in chunks, read as they are consumed: the model is never held whole.

    The stream is closed once its data is read, or at once if its header is refused.
    """
    try:
        specs, _ = read_header(stream)
    except BaseException:
        stream.close()
        raise

    def chunks() -> Iterator[bytes]:
        with stream:
            yield from read_pieces(stream, total_bytes(specs), chunk_bytes)

    return specs, chunks()


def send_model(message: Callable[..., M], header: object, data: Iterable[bytes]) -> Iterator[M]:
    """The messages of one model stream: ``message(header=...)``, then ``message(data=...)``."""
    yield message(header=header)
    for chunk in data:
        yield message(data=chunk)


def wire_size(data: bytes) -> int:
    """Serialized size of a chunk message holding ``data``, without building the message."""
    length = len(data)
    varint = 1
    while length >= 0x80:
        length >>= 7
        varint += 1
    return 1 + varint + len(data)


# -- receiving ----------------------------------------------------------------------------


@dataclass
class IncomingModel(Generic[H]):
    """A model stream whose header has arrived; its bytes have not been read yet."""

    header: H
    messages: AsyncIterator[Chunk[H]]
    what: str
    wire_bytes: int = 0
    """Serialized bytes received so far (header included): what this stream cost."""
    disk_seconds: float = 0.0
    """Seconds `save` spent writing the bytes to disk (the rest of a save is the network)."""

    async def save(
        self,
        path: Path,
        layout: pb.ModelHeader,
        *,
        expect: Sequence[TensorSpec] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> list[TensorSpec]:
        """Write the announced model to ``path`` with bounded memory; returns its layout.

        With ``expect``, a layout that differs from it is refused before any byte is read:
        the one place where an update's tensor names, dtypes and shapes are checked.
        ``on_bytes`` is told the serialized size of each data message as it arrives.
        """
        specs = specs_from_proto(layout)
        if expect is not None:
            check_same_layout(expect, specs)
        writer = ModelFileWriter(path, specs)
        try:
            with writer:
                async for message in self.messages:
                    writer.write(_data_of(message, self.what))
                    size = wire_size(message.data)
                    self.wire_bytes += size
                    if on_bytes is not None:
                        on_bytes(size)
        finally:
            self.disk_seconds += writer.disk_seconds
        return specs


async def receive_model(messages: AsyncIterable[Chunk[H]], what: str) -> IncomingModel[H]:
    """Read the header of a model stream (a gRPC call or any async iterable of messages);
    ``what`` names the stream in errors."""
    iterator = aiter(messages)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise ModelFormatError(f"{what} ended before its header") from None
    if first.WhichOneof("part") != "header":
        raise ModelFormatError(f"{what} did not start with its header")
    return IncomingModel(first.header, iterator, what, first.ByteSize())


def receive_params(
    messages: Iterator[pb.ModelChunk], what: str
) -> tuple[pb.ModelHeader, Params, int]:
    """A model download rebuilt in memory: its header, its arrays and its wire bytes."""
    first = next(messages, None)
    if first is None or first.WhichOneof("part") != "header":
        raise ModelFormatError(f"{what} did not start with its header")
    download = _Download(first.header, what, first.ByteSize())
    for message in messages:
        download.add(_data_of(message, what))
    return first.header, download.params(), download.wire_bytes


async def receive_download(messages: AsyncIterable[pb.ModelChunk], what: str) -> Params:
    """`receive_params` for asyncio (a gRPC call's response stream): the arrays only."""
    incoming = await receive_model(messages, what)
    download = _Download(incoming.header, what, incoming.wire_bytes)
    async for message in incoming.messages:
        download.add(_data_of(message, what))
    return download.params()


class _Download:
    """The bytes of one model download as they arrive, checked against its header."""

    def __init__(self, header: pb.ModelHeader, what: str, wire_bytes: int) -> None:
        self._specs = specs_from_proto(header)
        self._buffer = bytearray(total_bytes(self._specs))
        self._offset = 0
        self._what = what
        self.wire_bytes = wire_bytes

    def add(self, data: bytes) -> None:
        end = self._offset + len(data)
        if end > len(self._buffer):
            raise ModelFormatError(
                f"{self._what}: received more than the {len(self._buffer)} bytes the header "
                "announced"
            )
        self._buffer[self._offset : end] = data
        self._offset, self.wire_bytes = end, self.wire_bytes + wire_size(data)

    def params(self) -> Params:
        if self._offset != len(self._buffer):
            raise ModelFormatError(
                f"{self._what} ended after {self._offset} of {len(self._buffer)} bytes"
            )
        return params_from_bytes(self._specs, self._buffer)


def _data_of(message: Chunk[object], what: str) -> bytes:
    if message.WhichOneof("part") != "data":
        raise ModelFormatError(f"{what}: a second header arrived in the middle of the stream")
    return message.data
