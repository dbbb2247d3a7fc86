"""Coordinate blocks: how rules that need every update read them without loading them whole.

An update may be a read-only `numpy.memmap` of a file larger than memory. Rules that need
all updates at once (median, Krum, ...) therefore walk each tensor's flattened coordinates
in blocks and stack only that block across the updates: the stacked block holds at most
`BLOCK_ELEMENTS` float64 values whatever the number of updates, so the temporaries stay
bounded (32 MiB by default) and only the pages of one block are read from each file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from stratafl.params import Params, TensorSpec

BLOCK_ELEMENTS = 1 << 22
"""Values in one stacked block (all updates together). Read at call time, so tests can
lower it to check that blockwise results equal direct ones."""


def flat(array: np.ndarray) -> np.ndarray:
    """A flat view of ``array`` (no copy for the contiguous arrays and memmaps we get)."""
    return np.asarray(array).reshape(-1)


def coordinate_blocks(size: int, count: int) -> Iterator[slice]:
    """Slices covering ``range(size)``, short enough that ``count`` stacked rows fit one block."""
    step = max(1, BLOCK_ELEMENTS // max(count, 1))
    for start in range(0, size, step):
        yield slice(start, min(start + step, size))


def stack_block(updates: Sequence[Mapping[str, np.ndarray]], name: str, block: slice) -> np.ndarray:
    """Rows ``update[name].flat[block]`` for every update, as one float64 array."""
    rows = np.empty((len(updates), block.stop - block.start), dtype=np.float64)
    for row, update in zip(rows, updates, strict=True):
        row[...] = flat(update[name])[block]
    return rows


def coordinatewise(
    updates: Sequence[Mapping[str, np.ndarray]],
    specs: Sequence[TensorSpec],
    reduce: Callable[[np.ndarray], np.ndarray],
) -> Params:
    """Apply ``reduce`` (stacked block of shape (n, b) -> values of shape (b,)) to every block
    of every tensor; the result has the layout described by ``specs``."""
    result: Params = {}
    for spec in specs:
        out = np.empty(spec.shape, dtype=spec.numpy_dtype)
        flat_out = out.reshape(-1)
        for block in coordinate_blocks(spec.size, len(updates)):
            flat_out[block] = reduce(stack_block(updates, spec.name, block))
        result[spec.name] = out
    return result
