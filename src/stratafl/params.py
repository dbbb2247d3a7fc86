"""Model parameters: named numpy arrays, and the typed description of their layout.

Parameters travel and rest as an ordered mapping ``name -> ndarray``. A `TensorSpec`
describes one tensor (name, dtype, shape); a list of specs is the header that goes before
the raw bytes on the wire and in a safetensors file. Only plain numeric dtypes are allowed,
so bytes can always be reinterpreted safely: there is no pickle anywhere.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stratafl.errors import ModelFormatError

Params = dict[str, np.ndarray]
"""Model parameters: tensor name -> array, in a fixed order."""

# safetensors dtype codes <-> numpy dtypes (little-endian on the wire and on disk).
_CODE_TO_DTYPE: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_DTYPE_TO_CODE = {dtype: code for code, dtype in _CODE_TO_DTYPE.items()}


def dtype_code(dtype: np.dtype) -> str:
    """The safetensors code of a numpy dtype, e.g. ``float32 -> "F32"``."""
    code = _DTYPE_TO_CODE.get(np.dtype(dtype).newbyteorder("<"))
    if code is None:
        code = _DTYPE_TO_CODE.get(np.dtype(dtype))
    if code is None:
        raise ModelFormatError(
            f"dtype {np.dtype(dtype)} cannot be sent; use one of "
            f"{sorted(str(d) for d in _CODE_TO_DTYPE.values())}"
        )
    return code


def dtype_of(code: str) -> np.dtype:
    """The numpy dtype of a safetensors code, e.g. ``"F32" -> float32``."""
    try:
        return _CODE_TO_DTYPE[code]
    except KeyError:
        raise ModelFormatError(
            f"unknown dtype code {code!r}; expected one of {sorted(_CODE_TO_DTYPE)}"
        ) from None


@dataclass(frozen=True)
class TensorSpec:
    """The layout of one tensor: what a reader needs to rebuild it from raw bytes."""

    name: str
    dtype: str  # safetensors code, e.g. "F32"
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        return dtype_of(self.dtype)

    @property
    def size(self) -> int:
        """Python ints, never numpy's int64, which wraps: [2**32, 2**32] is not 0 elements."""
        return math.prod(int(d) for d in self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * int(self.numpy_dtype.itemsize)

    @classmethod
    def of(cls, name: str, array: np.ndarray) -> TensorSpec:
        return cls(
            name=name, dtype=dtype_code(array.dtype), shape=tuple(int(d) for d in array.shape)
        )


def specs_of(params: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """The header describing ``params``, in their order."""
    return [TensorSpec.of(name, np.asarray(array)) for name, array in params.items()]


def total_bytes(specs: Sequence[TensorSpec]) -> int:
    return sum(spec.nbytes for spec in specs)


def check_same_layout(expected: Sequence[TensorSpec], got: Sequence[TensorSpec]) -> None:
    """Raise `ModelFormatError` naming the first tensor whose name, dtype or shape differs."""
    expected_by_name = {spec.name: spec for spec in expected}
    got_by_name = {spec.name: spec for spec in got}
    missing = [name for name in expected_by_name if name not in got_by_name]
    extra = [name for name in got_by_name if name not in expected_by_name]
    if missing or extra:
        raise ModelFormatError(
            f"tensor names differ from the global model: missing {missing}, unexpected {extra}"
        )
    for name, want in expected_by_name.items():
        have = got_by_name[name]
        if (have.dtype, have.shape) != (want.dtype, want.shape):
            raise ModelFormatError(
                f"tensor {name!r} is {have.dtype}{list(have.shape)} but the global model has "
                f"{want.dtype}{list(want.shape)}; train from the model you were sent"
            )


def check_subset_layout(expected: Sequence[TensorSpec], got: Sequence[TensorSpec]) -> None:
    """Raise `ModelFormatError` unless ``got`` is a partial update of ``expected``: at least
    one tensor, each named once, none unknown, each with the global model's dtype and shape.
    """
    counts = Counter(spec.name for spec in got)
    if not counts:
        raise ModelFormatError("the update holds no tensor; send at least one")
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise ModelFormatError(f"the update names tensors {repeated} more than once")
    # the global model's specs of the tensors sent: any other name is reported as unexpected
    check_same_layout([spec for spec in expected if spec.name in counts], got)


def num_parameters(params: Mapping[str, np.ndarray]) -> int:
    return sum(int(np.asarray(a).size) for a in params.values())
