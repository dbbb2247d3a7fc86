"""Model updates for the aggregation rules' tests: random, read-only, and memory-mapped.

Every array is made read-only, so a rule that wrote to its inputs would fail the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import settings

from stratafl.params import Params

FAST = settings(max_examples=50, deadline=None)
"""The property tests' budget: enough cases to find a broken rule, no deadline on a busy box."""


def frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array)
    array.setflags(write=False)
    return array


def model(rng: np.random.Generator, dtype: type = np.float32, scale: float = 1.0) -> Params:
    return {
        "layer.weight": frozen((rng.normal(size=(3, 4)) * scale).astype(dtype)),
        "layer.bias": frozen((rng.normal(size=(4,)) * scale).astype(dtype)),
    }


def models(seed: int, count: int, dtype: type = np.float32) -> list[Params]:
    rng = np.random.default_rng(seed)
    return [model(rng, dtype) for _ in range(count)]


def wide_models(seed: int, count: int) -> list[Params]:
    """Updates of several tensors, dtypes and shapes, for the block-by-block paths."""
    rng = np.random.default_rng(seed)
    return [
        {
            "a": frozen(rng.normal(size=(7, 9)).astype(np.float32)),
            "b": frozen(rng.normal(size=(50,))),
            "steps": frozen(rng.integers(0, 100, size=(3,))),
        }
        for _ in range(count)
    ]


def memmapped(updates: list[Params], folder: Path) -> list[Params]:
    """``updates`` written to ``folder`` and mapped back read-only, as a combiner reads
    staged updates: a rule sees memmaps, not arrays in memory."""
    mapped = []
    for index, update in enumerate(updates):
        on_disk = {}
        for name, array in update.items():
            path = folder / f"{index}-{name}.bin"
            array.tofile(path)
            on_disk[name] = np.memmap(path, dtype=array.dtype, mode="r", shape=array.shape)
        mapped.append(on_disk)
    return mapped


def assert_params_equal(a: Params, b: Params, rtol: float = 0.0, atol: float = 0.0) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].shape == b[name].shape, name
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)
