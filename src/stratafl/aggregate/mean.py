"""FedAvg as a streaming fold (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data").

    x_new = sum_i n_i * x_i / sum_i n_i

The fold keeps ``(sum_i n_i * x_i, sum_i n_i)`` in float64, so memory is O(model) however
many updates arrive, and its result carries the total weight: a partial from one combiner
added to another fold with that weight gives exactly the flat FedAvg over all clients
(hierarchical == flat, up to one float32 rounding of the partial).

Partial updates (a client sends only some tensors) make the weights per tensor::

    x_new[t] = sum_{i sent t} n_i * x_i[t] / sum_{i sent t} n_i      (x_ref[t] if nobody did)

so the fold keeps one weight sum per tensor. A combiner's partial carries those sums
(`WeightedMeanFold.tensor_weights`) and the reducer adds each tensor of it with its own
sum, which keeps hierarchical == flat. A full update is the case where every tensor has
the update's weight: with full updates nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate import blocks
from stratafl.aggregate.blocks import coordinate_blocks, flat
from stratafl.errors import ConfigError
from stratafl.params import Params, TensorSpec, check_subset_layout, specs_of

SCRATCH_SHARE = 64
"""The fold's scratch block is this fraction of `blocks.BLOCK_ELEMENTS` (64 Ki float64,
512 KiB): small enough to stay in the CPU's cache between the multiply that fills it and
the add that reads it (the fold used 8 MiB blocks before; `benchmarks/fold_throughput.py`
measures the fold)."""


class WeightedMeanFold:
    """Running weighted sums, one weight sum per tensor, of updates that each hold some or
    all of one layout's tensors.

    ``reference`` (the round's global model) is what a tensor no update held keeps; without
    it, `result` refuses such a tensor.
    """

    def __init__(
        self, specs: Sequence[TensorSpec], reference: Mapping[str, np.ndarray] | None = None
    ) -> None:
        self._specs = list(specs)
        self._reference = reference
        self._sums = {spec.name: np.zeros(spec.shape, dtype=np.float64) for spec in self._specs}
        self._weights = dict.fromkeys(self._sums, 0.0)
        self._total_weight = 0.0
        self._count = 0

    def add(
        self,
        update: Mapping[str, np.ndarray],
        weight: float,
        *,
        tensor_weights: Mapping[str, float] | None = None,
    ) -> None:
        """Fold ``weight * update`` into the sums of the tensors ``update`` holds.

        ``tensor_weights`` gives each tensor of ``update`` its own weight instead: how the
        reducer adds a combiner's partial of partial updates (each tensor's weight sum),
        ``weight`` being the partial's total. Raises `ConfigError` or `ModelFormatError`
        with nothing folded. ``update`` is never modified.
        """
        check_weight("update weight", weight)
        check_subset_layout(self._specs, specs_of(update))
        weights = dict.fromkeys(update, float(weight))
        if tensor_weights is not None:
            if set(tensor_weights) != set(update):
                raise ConfigError(
                    f"tensor weights name {sorted(tensor_weights)} but the partial holds "
                    f"{sorted(update)}; give one weight per tensor sent"
                )
            for name, tensor_weight in tensor_weights.items():
                check_weight(f"weight of tensor {name!r}", tensor_weight)
            weights = {name: float(tensor_weights[name]) for name in update}
        for name, tensor_weight in weights.items():
            flat_total = flat(self._sums[name])
            scratch = _scratch(flat_total.size)
            for window in coordinate_blocks(flat_total.size, 1):
                # taken afresh per window: of an update mapped from disk, only this window's
                # pages are resident, not the whole tensor's (1 GB for a 1 GB tensor)
                values, sums = flat(update[name])[window], flat_total[window]
                for block in coordinate_blocks(values.size, SCRATCH_SHARE):
                    part = scratch[: block.stop - block.start]
                    np.multiply(values[block], tensor_weight, out=part, dtype=np.float64)
                    np.add(sums[block], part, out=sums[block])
            self._weights[name] += tensor_weight
        self._total_weight += float(weight)
        self._count += 1

    def tensor_weights(self) -> dict[str, float]:
        """Each tensor's weight sum: the total weight for a tensor every update held, 0 for
        one no update held."""
        return dict(self._weights)

    def result(self) -> tuple[Params, float]:
        """The weighted mean in each tensor's own dtype (the reference where no update held
        the tensor), and the total weight behind it. The fold is spent after this.

        Each mean is written over the float64 sums it comes from, in the first bytes of
        their buffer: taking the result of a 1 GB model's fold needs no memory beyond the
        2 GB of sums it already holds, where a fresh array would need a third GB.
        """
        if self._count == 0:
            raise ConfigError("no update was added; a weighted mean of nothing is undefined")
        if not self._sums:
            raise ConfigError(
                "this fold's result was already taken; a fold gives one result, so make a "
                "new fold for the next round"
            )
        mean: Params = {}
        for spec in self._specs:
            weight = self._weights[spec.name]
            total = self._sums.pop(spec.name)
            if weight == 0:
                mean[spec.name] = self._unchanged(spec)
                continue
            mean[spec.name] = _divided_in_place(total, weight, spec).reshape(spec.shape)
        return mean, self._total_weight

    def _unchanged(self, spec: TensorSpec) -> np.ndarray:
        if self._reference is None:
            raise ConfigError(
                f"no update held tensor {spec.name!r} and the fold has no reference model "
                "to keep it from; build the fold with the round's global model"
            )
        return np.array(self._reference[spec.name], dtype=spec.numpy_dtype, copy=True)


def _divided_in_place(sums: np.ndarray, weight: float, spec: TensorSpec) -> np.ndarray:
    """``sums / weight`` in ``spec``'s dtype, written over the float64 ``sums``.

    Block by block through a float64 scratch: the k-byte values of elements [s, e) land in
    bytes [k*s, k*e) of the buffer, and k <= 8, so they overwrite only sums that were read
    already (the sums of [s, e) sit in bytes [8*s, 8*e) and are in the scratch by then).
    """
    flat_sums = sums.reshape(-1)
    out = flat_sums.view(np.uint8)[: flat_sums.size * spec.numpy_dtype.itemsize]
    out = out.view(spec.numpy_dtype)
    scratch = _scratch(flat_sums.size)
    for block in coordinate_blocks(flat_sums.size, SCRATCH_SHARE):
        part = scratch[: block.stop - block.start]
        np.divide(flat_sums[block], weight, out=part)
        out[block] = part
    return out


def _scratch(size: int) -> np.ndarray:
    """One float64 block, reused for every block of a tensor: no temporary of its size."""
    return np.empty(min(size, max(1, blocks.BLOCK_ELEMENTS // SCRATCH_SHARE)), dtype=np.float64)


def check_weight(what: str, weight: float) -> None:
    """Raise `ConfigError` unless ``weight`` (named ``what`` in the message) is a positive
    finite number: what every fold asks of the weight an update comes with."""
    if not np.isfinite(weight) or weight <= 0:
        raise ConfigError(f"{what} must be a positive number, got {weight}")


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
