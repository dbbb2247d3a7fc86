"""The header of a model file: written by us, read as if a hostile peer wrote it.

A safetensors header is an 8-byte little-endian length, then JSON: ``name -> {dtype,
shape, data_offsets}`` plus optional ``__metadata__``. `read_header` bounds the length
before reading, then demands known dtypes, whole non-negative shapes, offsets that tile
the data exactly with no gap or overlap, and a total within ``max_bytes``, so nothing a
header announces is allocated before it is checked.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from stratafl.errors import ModelFormatError
from stratafl.params import TensorSpec, dtype_of

__all__ = ["MAX_DIMS", "MAX_HEADER_BYTES", "MAX_MODEL_BYTES", "encode_header", "read_header"]

MAX_HEADER_BYTES = 1 << 20
"""Refused unread above 1 MiB: a real header is about 100 bytes per tensor."""
MAX_MODEL_BYTES = 1 << 40
"""No header may announce over 1 TiB; callers with a tighter limit pass ``max_bytes``."""
MAX_DIMS = 32  # numpy's oldest limit on the number of dimensions of an array


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
