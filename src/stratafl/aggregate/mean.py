"""FedAvg as a streaming fold (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data").

    x_new = sum_i n_i * x_i / sum_i n_i

The fold keeps ``(sum_i n_i * x_i, sum_i n_i)`` in float64, so memory is O(model) however
many updates arrive, and its result carries the total weight: a partial from one combiner
added to another fold with that weight gives exactly the flat FedAvg over all clients
(hierarchical == flat, up to one float32 rounding of the partial).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate import blocks
from stratafl.aggregate.blocks import coordinate_blocks, flat
from stratafl.errors import ConfigError
from stratafl.params import Params, TensorSpec, check_same_layout, specs_of


class WeightedMeanFold:
    """Running weighted sum of updates that all share one layout."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self._specs = list(specs)
        self._sums = {spec.name: np.zeros(spec.shape, dtype=np.float64) for spec in self._specs}
        self._total_weight = 0.0
        self._count = 0

    def add(self, update: Mapping[str, np.ndarray], weight: float) -> None:
        """Fold ``weight * update`` into the running sum. ``update`` is never modified."""
        if not np.isfinite(weight) or weight <= 0:
            raise ConfigError(f"update weight must be a positive number, got {weight}")
        check_same_layout(self._specs, specs_of(update))
        for name, total in self._sums.items():
            flat_total, flat_update = flat(total), flat(update[name])
            # one float64 block of scratch, reused: no further temporary of that size
            scratch = np.empty(min(flat_total.size, blocks.BLOCK_ELEMENTS // 4), dtype=np.float64)
            for block in coordinate_blocks(flat_total.size, 4):
                part = scratch[: block.stop - block.start]
                part[...] = flat_update[block]
                part *= weight
                flat_total[block] += part
        self._total_weight += float(weight)
        self._count += 1

    def result(self) -> tuple[Params, float]:
        """The weighted mean in each tensor's own dtype, and the total weight behind it."""
        if self._count == 0:
            raise ConfigError("no update was added; a weighted mean of nothing is undefined")
        mean: Params = {}
        for spec in self._specs:
            total = self._sums[spec.name].reshape(-1)
            out = np.empty(total.size, dtype=spec.numpy_dtype)
            for block in coordinate_blocks(total.size, 1):  # divided into place: no temporary
                np.divide(total[block], self._total_weight, out=out[block], casting="unsafe")
            mean[spec.name] = out.reshape(spec.shape)
        return mean, self._total_weight


def weighted_mean(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> Params:
    """The direct weighted mean over stacked updates: the reference the fold is tested against.

    Needs all updates in memory at once; the runtime uses `WeightedMeanFold` instead.
    """
    if len(updates) != len(weights) or not updates:
        raise ConfigError(
            f"need one weight per update, got {len(updates)} updates and {len(weights)} weights"
        )
    return {
        name: np.average(
            np.stack([np.asarray(u[name], dtype=np.float64) for u in updates]),
            axis=0,
            weights=np.asarray(weights, dtype=np.float64),
        ).astype(np.asarray(first).dtype)
        for name, first in updates[0].items()
    }
