"""Models as chunked streams of messages: a header, then raw bytes, 4 MiB at most each.

Works for every message with a ``oneof part { header; data; }`` (model downloads, client
updates, combiner partials). Senders read from a file or from arrays in memory; receivers
write to a model file (bounded memory) or rebuild arrays in memory (clients).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from stratafl.errors import ModelFormatError
from stratafl.modelfile import (
    CHUNK_BYTES,
    ModelFileWriter,
    iter_chunks,
    params_from_bytes,
    read_header,
)
from stratafl.params import Params, TensorSpec, total_bytes
from stratafl.proto import stratafl_pb2 as pb


def header_to_proto(model_id: str, specs: Sequence[TensorSpec]) -> pb.ModelHeader:
    return pb.ModelHeader(
        model_id=model_id,
        tensors=[pb.TensorSpec(name=s.name, dtype=s.dtype, shape=list(s.shape)) for s in specs],
    )


def specs_from_proto(header: pb.ModelHeader) -> list[TensorSpec]:
    specs = [TensorSpec(t.name, t.dtype, tuple(int(d) for d in t.shape)) for t in header.tensors]
    for spec in specs:
        spec.numpy_dtype  # noqa: B018 - raises ModelFormatError on an unknown dtype code
        if any(d < 0 for d in spec.shape):
            raise ModelFormatError(f"tensor {spec.name!r} has a negative dimension {spec.shape}")
    if len({s.name for s in specs}) != len(specs):
        raise ModelFormatError("model header names a tensor twice")
    return specs


def file_bytes(
    path: Path, chunk_bytes: int = CHUNK_BYTES
) -> tuple[list[TensorSpec], Iterator[bytes]]:
    """The layout of a model file and an iterator over its raw data, read as it is consumed."""
    stream = open(path, "rb")  # noqa: SIM115 - closed by the generator below
    try:
        specs, _ = read_header(stream)
    except BaseException:
        stream.close()
        raise

    def chunks() -> Iterator[bytes]:
        with stream:
            yield from iter_chunks(stream, total_bytes(specs), chunk_bytes)

    return specs, chunks()


def model_chunks(
    model_id: str, specs: Sequence[TensorSpec], data: Iterable[bytes]
) -> Iterator[pb.ModelChunk]:
    yield pb.ModelChunk(header=header_to_proto(model_id, specs))
    for chunk in data:
        yield pb.ModelChunk(data=chunk)


def wire_size(data: bytes) -> int:
    """Serialized size of a chunk message holding ``data``, without building the message."""
    length = len(data)
    varint = 1
    while length >= 0x80:
        length >>= 7
        varint += 1
    return 1 + varint + len(data)


class _Chunk(Protocol):
    data: bytes

    def WhichOneof(self, name: str) -> str | None: ...  # noqa: N802 - protobuf's name


async def data_of(messages: AsyncIterator[_Chunk]) -> AsyncIterator[bytes]:
    """The raw bytes of the data messages that follow a stream's header."""
    async for message in messages:
        if message.WhichOneof("part") != "data":
            raise ModelFormatError("a second header arrived in the middle of a model stream")
        yield message.data


async def write_file(
    path: Path,
    specs: Sequence[TensorSpec],
    data: AsyncIterator[bytes],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write a model file from raw data chunks with bounded memory; returns the bytes written."""
    with ModelFileWriter(path, specs, metadata) as writer:
        async for chunk in data:
            writer.write(chunk)
    return writer.received


def receive_to_params(specs: Sequence[TensorSpec], data: Iterable[bytes]) -> Params:
    """Rebuild arrays in memory from the raw data that follows a header."""
    buffer = bytearray(total_bytes(specs))
    offset = 0
    for chunk in data:
        end = offset + len(chunk)
        if end > len(buffer):
            raise ModelFormatError(
                f"received more than the {len(buffer)} bytes the header announced"
            )
        buffer[offset:end] = chunk
        offset = end
    if offset != len(buffer):
        raise ModelFormatError(f"model stream ended after {offset} of {len(buffer)} bytes")
    return params_from_bytes(specs, buffer)
