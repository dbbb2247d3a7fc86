"""Each codec, one tensor at a time: its encoded tensors, their layout, and the way back.

An encoded update is itself a model (named tensors), so it travels and is staged exactly
as a raw one does and its layout is checked before a byte is read. The names are prefixed
(``q:``/``s:`` for int8, ``i:``/``v:`` for top-k, ``r:`` for a tensor sent raw), so no
user's tensor name can collide with another's encoded part. Integer and boolean tensors
are never compressed: they travel raw, as weights.

Decoding trusts nothing it reads: scales must be finite and non-negative, top-k indices
in range and unique. Whatever it cannot decode is a `ModelFormatError` naming the tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stratafl.compression.spec import Codec, Compression
from stratafl.errors import ModelFormatError
from stratafl.params import TensorSpec

FLOAT_CODES = frozenset({"F16", "F32", "F64"})
FLOAT16_MAX = float(np.finfo(np.float16).max)
INT8_LEVELS = 127
"""Symmetric int8: q in [-127, 127], scale = max|x| / 127, so 0 is exact."""


def compressible(spec: TensorSpec, compression: Compression) -> bool:
    return compression.is_delta and spec.dtype in FLOAT_CODES


def encoded_layout(spec: TensorSpec, compression: Compression) -> list[TensorSpec]:
    """The tensors that carry ``spec`` under ``compression``: what a header must announce."""
    if not compression.is_delta:
        return [spec]
    if spec.dtype not in FLOAT_CODES:
        return [TensorSpec("r:" + spec.name, spec.dtype, spec.shape)]
    if compression.codec == Codec.FLOAT16:
        return [TensorSpec(spec.name, "F16", spec.shape)]
    if compression.codec == Codec.INT8:
        return [
            TensorSpec("q:" + spec.name, "I8", spec.shape),
            TensorSpec("s:" + spec.name, "F32", ()),
        ]
    k = compression.k_of(spec.size)
    index = "I32" if spec.size <= np.iinfo(np.int32).max else "I64"
    return [
        TensorSpec("i:" + spec.name, index, (k,)),
        TensorSpec("v:" + spec.name, spec.dtype, (k,)),
    ]


def check_finite_update(name: str, delta: np.ndarray) -> None:
    """NaN and inf are refused before encoding, as the combiner refuses them raw."""
    if not np.all(np.isfinite(delta)):
        raise ModelFormatError(
            f"tensor {name!r} holds NaN or inf; fix the training (e.g. a lower learning rate)"
        )


def encode_float16(name: str, delta: np.ndarray) -> np.ndarray:
    check_finite_update(name, delta)
    if delta.size and float(np.max(np.abs(delta))) > FLOAT16_MAX:
        raise ModelFormatError(
            f"tensor {name!r} changed by more than float16 holds ({FLOAT16_MAX:g}); "
            "use int8 or none compression"
        )
    return delta.astype(np.float16)


def encode_int8(name: str, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)`` with ``|q * scale - delta| <= scale / 2`` for every entry."""
    check_finite_update(name, delta)
    largest = float(np.max(np.abs(delta))) if delta.size else 0.0
    scale = np.float32(largest / INT8_LEVELS)
    if scale == 0:
        return np.zeros(delta.shape, np.int8), np.array(scale)
    q = np.rint(delta.astype(np.float64) / float(scale))
    return np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), np.array(scale)


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """The flat indices of the ``k`` entries of largest magnitude, ascending."""
    flat = values.reshape(-1)
    if k >= flat.size:
        return np.arange(flat.size)
    chosen = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]
    return np.sort(chosen)


def decode(
    spec: TensorSpec,
    encoded: Mapping[str, np.ndarray],
    reference: np.ndarray,
    compression: Compression,
) -> np.ndarray:
    """The tensor ``spec`` as the client trained it: the global ``reference`` plus its
    decoded update, in ``spec``'s dtype (raw weights for ``none`` and integer tensors)."""
    if not compression.is_delta:
        return np.asarray(encoded[spec.name])
    if spec.dtype not in FLOAT_CODES:
        return np.asarray(encoded["r:" + spec.name])
    dtype = spec.numpy_dtype
    base = np.asarray(reference, dtype=dtype)
    if compression.codec == Codec.FLOAT16:
        return base + np.asarray(encoded[spec.name]).astype(dtype)
    if compression.codec == Codec.INT8:
        scale = float(np.asarray(encoded["s:" + spec.name]))
        if not (np.isfinite(scale) and scale >= 0):
            raise ModelFormatError(f"tensor {spec.name!r}: int8 scale {scale} must be finite, >= 0")
        return base + np.asarray(encoded["q:" + spec.name]).astype(dtype) * dtype.type(scale)
    indices = np.asarray(encoded["i:" + spec.name]).astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= spec.size):
        raise ModelFormatError(f"tensor {spec.name!r}: a top-k index is outside 0..{spec.size - 1}")
    if np.unique(indices).size != indices.size:
        raise ModelFormatError(f"tensor {spec.name!r}: a top-k index is sent twice")
    out = base.copy().reshape(-1)
    out[indices] += np.asarray(encoded["v:" + spec.name]).astype(dtype)
    return out.reshape(spec.shape)
