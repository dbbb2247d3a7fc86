"""Model files in the safetensors format, read and written as streams.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``name -> {dtype, shape, data_offsets}`` plus optional ``__metadata__``), then the raw
tensor bytes. That is exactly our wire layout (typed header, then raw bytes), so a model
moves disk -> wire -> disk without ever being held whole in memory, and every file in the
model store opens with the stock ``safetensors`` library too. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from stratafl.errors import ModelFormatError
from stratafl.params import Params, TensorSpec, dtype_of, specs_of, total_bytes

MAX_HEADER_BYTES = 1 << 20
"""Refused unread above 1 MiB: a real header is about 100 bytes per tensor."""
MAX_MODEL_BYTES = 1 << 40
"""No header may announce over 1 TiB; callers with a tighter limit pass ``max_bytes``."""
MAX_DIMS = 32  # numpy's oldest limit on the number of dimensions of an array
READ_PIECE_BYTES = 4 * 1024 * 1024
"""How much of a file is read at a time when it is copied into memory."""


def encode_header(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header for tensors laid out back to back in ``specs`` order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def read_header(
    stream: BinaryIO, *, max_bytes: int = MAX_MODEL_BYTES
) -> tuple[list[TensorSpec], dict[str, str]]:
    """Read the header at the current position; leaves ``stream`` at the first data byte.

    The header may come from anyone, so it is bounded before it is read and checked as
    the safetensors library does: tensors back to back from offset 0 in offset order, each
    spanning exactly its dtype and shape (sizes in Python ints, which cannot wrap), no
    duplicate names, and at least one byte of data, at most ``max_bytes``.
    """
    prefix = stream.read(8)
    if len(prefix) != 8:
        raise ModelFormatError("model file is shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise ModelFormatError(
            f"model header claims {length} bytes; the limit is {MAX_HEADER_BYTES} (1 MiB): "
            "send a safetensors file"
        )
    if len(raw := stream.read(length)) != length:
        raise ModelFormatError(f"model header ends after {len(raw)} of {length} bytes: truncated")
    header = _parse_header(raw)
    metadata = _metadata(header.pop("__metadata__", {}))
    placed = [_placed(name, entry, max_bytes) for name, entry in header.items()]
    return _laid_out(placed, max_bytes), metadata


def _parse_header(raw: bytes) -> dict[str, object]:
    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len(obj := dict(pairs)) != len(pairs):  # JSON would let the last one win
            raise ModelFormatError("model header names a tensor or a field twice")
        return obj

    try:
        header = json.loads(raw, object_pairs_hook=unique)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFormatError(f"model header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelFormatError("model header must be a JSON object")
    return header


def _metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ModelFormatError("model header's __metadata__ must be an object of strings")
    return dict(value)


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0  # bool is an int subclass, and not a size


def _placed(name: str, entry: object, max_bytes: int) -> tuple[int, int, TensorSpec]:
    """One tensor's ``(begin, end, spec)`` after checking its entry field by field."""
    where = f"tensor {name!r}"
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ModelFormatError(f"{where}: its entry must be exactly dtype, shape, data_offsets")
    dtype, shape, offsets = str(entry["dtype"]), entry["shape"], entry["data_offsets"]
    dtype_of(dtype)
    if not isinstance(shape, list) or len(shape) > MAX_DIMS:
        raise ModelFormatError(f"{where}: shape must be a list of at most {MAX_DIMS} sizes")
    if not all(_whole(d) and d <= max_bytes for d in shape):
        raise ModelFormatError(f"{where}: shape {shape} must hold sizes from 0 to {max_bytes}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_whole, offsets))):
        raise ModelFormatError(f"{where}: data_offsets must be [begin, end], whole numbers")
    begin, end = offsets
    if end < begin:
        raise ModelFormatError(f"{where}: data_offsets {offsets} end before they begin")
    spec = TensorSpec(name, dtype, tuple(shape))  # sizes in Python ints: nothing wraps
    if end - begin != spec.nbytes:
        raise ModelFormatError(
            f"{where} spans {end - begin} bytes but {dtype}{shape} needs {spec.nbytes}"
        )
    return begin, end, spec


def _laid_out(placed: list[tuple[int, int, TensorSpec]], max_bytes: int) -> list[TensorSpec]:
    """The specs in offset order, after checking they tile the data from byte 0."""
    if not placed:
        raise ModelFormatError("model header lists no tensors; a model needs at least one")
    placed.sort(key=lambda item: (item[0], item[1]))
    expected = 0
    for begin, end, spec in placed:
        if begin != expected:
            where = f"tensor {spec.name!r} starts at byte {begin}"
            raise ModelFormatError(f"{where}, expected {expected}: no gaps or overlaps")
        expected = end
    if expected == 0:
        raise ModelFormatError("model holds no data: every tensor is empty")
    if expected > max_bytes:
        raise ModelFormatError(f"model holds {expected} bytes, over the limit of {max_bytes}")
    return [spec for _, _, spec in placed]


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
        self._file.write(chunk)
        self.received += len(chunk)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self._file is not None
        self._file.close()
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


class MappedModelFile(Mapping[str, np.ndarray]):
    """A model file whose tensors are mapped afresh on every access.

    Rules that need every update read them block by block. A long-lived memory map would
    keep each block's pages resident until the end, so K updates would count K x model in
    the process's RSS; mapping per access lets each block's pages go as soon as the block
    is consumed, so K updates larger than memory can be aggregated.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as stream:
            self.specs, _ = read_header(stream)
            offset = stream.tell()
        self._placement: dict[str, tuple[TensorSpec, int]] = {}
        for spec in self.specs:
            self._placement[spec.name] = (spec, offset)
            offset += spec.nbytes

    def __getitem__(self, name: str) -> np.ndarray:
        spec, offset = self._placement[name]
        if spec.size == 0:
            return np.zeros(spec.shape, dtype=spec.numpy_dtype)
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
