"""Model files in the safetensors format, read and written as streams.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``name -> {dtype, shape, data_offsets}`` plus optional ``__metadata__``), then the raw
tensor bytes. That is exactly our wire layout (typed header, then raw bytes), so a model
moves disk -> wire -> disk without ever being held whole in memory, and every file in the
model store opens with the stock ``safetensors`` library too. No pickle anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stratafl.errors import ModelFormatError
from stratafl.modelfile.header import MAX_MODEL_BYTES, encode_header, read_header
from stratafl.params import Params, TensorSpec, specs_of, total_bytes

READ_PIECE_BYTES = 4 * 1024 * 1024
"""How much of a file is read at a time when it is copied into memory."""


def read_pieces(stream: BinaryIO, nbytes: int, piece_bytes: int) -> Iterator[bytes]:
    """Read the next ``nbytes`` of ``stream`` in pieces of at most ``piece_bytes``."""
    remaining = nbytes
    while remaining > 0:
        piece = stream.read(min(piece_bytes, remaining))
        if not piece:
            raise ModelFormatError(f"model file ended {remaining} bytes early")
        remaining -= len(piece)
        yield piece


def tensor_bytes(params: Mapping[str, np.ndarray]) -> Iterator[memoryview]:
    """The raw little-endian bytes of each tensor of ``params``, in order, without copies
    (a big-endian or non-contiguous array is converted once)."""
    for array in params.values():
        flat = np.ascontiguousarray(np.asarray(array)).reshape(-1)
        little = flat.astype(flat.dtype.newbyteorder("<"), copy=False)
        yield memoryview(little.view(np.uint8).data)


class ModelFileWriter:
    """Write a model file from a header and a stream of raw byte chunks.

    The file appears under its final name only when every expected byte has arrived
    (written to ``path.partial`` first, then renamed), so a crash never leaves a torn model.
    """

    def __init__(
        self, path: Path, specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None
    ) -> None:
        self.path = Path(path)
        self.specs = list(specs)
        self.expected = total_bytes(self.specs)
        self.received = 0
        self._metadata = dict(metadata or {})
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._file: BinaryIO | None = None
        self.disk_seconds = 0.0
        """Seconds spent writing and closing the file: a transfer's share of disk staging."""

    def __enter__(self) -> ModelFileWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._partial, "wb")  # noqa: SIM115 - closed in __exit__
        self._file.write(encode_header(self.specs, self._metadata))
        return self

    def write(self, chunk: bytes | memoryview) -> None:
        assert self._file is not None, "use ModelFileWriter as a context manager"
        if self.received + len(chunk) > self.expected:
            raise ModelFormatError(
                f"received more than the {self.expected} bytes the header announced"
            )
        started = time.perf_counter()
        self._file.write(chunk)
        self.disk_seconds += time.perf_counter() - started
        self.received += len(chunk)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._file is not None
        started = time.perf_counter()
        self._file.close()
        self.disk_seconds += time.perf_counter() - started
        if exc_type is None and self.received != self.expected:
            self._partial.unlink(missing_ok=True)
            raise ModelFormatError(
                f"model stream ended after {self.received} of {self.expected} bytes"
            )
        if exc_type is not None:
            self._partial.unlink(missing_ok=True)
            return
        os.replace(self._partial, self.path)


def params_to_bytes(params: Mapping[str, np.ndarray]) -> bytes:
    """A whole model file in memory (for small models sent in one HTTP body)."""
    return encode_header(specs_of(params)) + b"".join(tensor_bytes(params))


def save_params(
    path: Path, params: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    with ModelFileWriter(path, specs_of(params), metadata) as writer:
        for data in tensor_bytes(params):
            writer.write(data)


def check_model_file(path: Path, *, max_bytes: int = MAX_MODEL_BYTES) -> list[TensorSpec]:
    """The layout of a model file, after checking that its data is exactly as long as its
    header says; reads the header only."""
    with open(path, "rb") as stream:
        specs, _ = read_header(stream, max_bytes=max_bytes)
        data_start = stream.tell()
    size = os.path.getsize(path)
    if size != data_start + total_bytes(specs):
        raise ModelFormatError(
            f"model file holds {size - data_start} data bytes but its header announces "
            f"{total_bytes(specs)}; send the whole file"
        )
    return specs


SMALL_FILE_BYTES = 1 << 20
"""Model files with at most this much data are read whole by `MappedModelFile`."""


class MappedModelFile(Mapping[str, np.ndarray]):
    """A model file whose tensors are mapped afresh on every access.

    Rules that need every update read them block by block. A long-lived memory map would
    keep each block's pages resident until the end, so K updates would count K x model in
    the process's RSS; mapping per access lets each block's pages go as soon as the block
    is consumed, so K updates larger than memory can be aggregated.

    A small file (at most `SMALL_FILE_BYTES` of data) is read once instead: mapping costs
    a system call per access (about 0.4 ms), which for a 70 kB update is most of a fold.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: bytes | None = None
        with open(self.path, "rb") as stream:
            self.specs, _ = read_header(stream)
            offset = stream.tell()
            if total_bytes(self.specs) <= SMALL_FILE_BYTES:
                self._data = stream.read(total_bytes(self.specs))
                if len(self._data) != total_bytes(self.specs):
                    raise ModelFormatError(
                        f"model file {self.path} ends before the {total_bytes(self.specs)} "
                        "data bytes its header announces"
                    )
                offset = 0
        self._placement: dict[str, tuple[TensorSpec, int]] = {}
        for spec in self.specs:
            self._placement[spec.name] = (spec, offset)
            offset += spec.nbytes

    def __getitem__(self, name: str) -> np.ndarray:
        spec, offset = self._placement[name]
        if spec.size == 0:
            return np.zeros(spec.shape, dtype=spec.numpy_dtype)
        if self._data is not None:  # read-only, as the map is
            return np.frombuffer(
                self._data, dtype=spec.numpy_dtype, count=spec.size, offset=offset
            ).reshape(spec.shape)
        return np.memmap(
            self.path, dtype=spec.numpy_dtype, mode="r", offset=offset, shape=spec.shape
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._placement)

    def __len__(self) -> int:
        return len(self._placement)


def copy_params_from_stream(stream: BinaryIO) -> tuple[Params, dict[str, str]]:
    """Every tensor of a model file open for reading (local or remote), and its metadata."""
    specs, metadata = read_header(stream)
    data = b"".join(read_pieces(stream, total_bytes(specs), READ_PIECE_BYTES))
    return {name: np.array(a) for name, a in params_from_bytes(specs, data).items()}, metadata


def copy_params_from_file(path: Path) -> Params:
    """Every tensor of a model file, copied into memory."""
    return {name: np.array(array) for name, array in MappedModelFile(path).items()}


def params_from_bytes(specs: Sequence[TensorSpec], data: bytes | bytearray | memoryview) -> Params:
    """Rebuild arrays from their raw bytes (copies nothing: the arrays view ``data``)."""
    if len(data) != total_bytes(specs):
        raise ModelFormatError(f"got {len(data)} bytes, the header announced {total_bytes(specs)}")
    params: Params = {}
    offset = 0
    for spec in specs:
        params[spec.name] = np.frombuffer(
            data, dtype=spec.numpy_dtype, count=spec.size, offset=offset
        ).reshape(spec.shape)
        offset += spec.nbytes
    return params
