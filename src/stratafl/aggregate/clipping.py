"""Norm bounding (Sun et al. 2019, "Can You Really Backdoor Federated Learning?").

Each update's difference from the global model g is clipped to L2 norm at most C, over all
tensors together, before the weighted mean:

    delta_i = x_i - g
    x = g + sum_i n_i * delta_i * min(1, C / ||delta_i||) / sum_i n_i

One update's influence on the result is then at most ``n_i C / sum n``: it bounds how far a
boosted (scaled-up) malicious update can pull the model, not where it pulls it.

Each update is scaled by one number, so the rule folds one update at a time (two passes
over that update: its norm, then the scaled sum). Across tiers it is exact: every partial
is a convex combination of clipped deltas, so its own delta already has norm <= C, and the
reducer's weighted mean of partials equals the flat rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stratafl.aggregate.blocks import coordinate_blocks, flat
from stratafl.aggregate.mean import check_weight
from stratafl.aggregate.rule import (
    MergesByWeightedMean,
    SameEveryRound,
    Update,
    fold_all,
    weighted_merge,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of


def distance(update: Update, reference: Update) -> float:
    """``||update - reference||`` in L2 over all tensors, computed blockwise."""
    total = 0.0
    for name, ref in reference.items():
        ref_flat, upd_flat = flat(ref), flat(update[name])
        for block in coordinate_blocks(ref_flat.size, 2):
            diff = upd_flat[block].astype(np.float64) - ref_flat[block].astype(np.float64)
            total += float(np.dot(diff, diff))
    return math.sqrt(total)


def clip_scale(norm: float, clip_norm: float) -> float:
    """``min(1, C / norm)``: the factor that brings a delta of this norm inside the C-ball."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


def check_clip_norm(rule: str, clip_norm: float) -> None:
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(
            f"{rule}: clip_norm={clip_norm} must be a positive number (an L2 norm bound on "
            "each update's difference from the global model, e.g. the median update norm)"
        )


class ClippedSumFold:
    """Running ``sum_i w_i * clip_C(x_i - g)`` in float64, and ``sum_i w_i``."""

    def __init__(self, reference: Update, clip_norm: float) -> None:
        self._reference = reference
        self._specs = specs_of(reference)
        self._clip_norm = clip_norm
        self._sums = {s.name: np.zeros(s.size, dtype=np.float64) for s in self._specs}
        self.total_weight = 0.0
        self.count = 0

    def add(self, update: Update, weight: float) -> None:
        """Fold ``weight * clip(update - reference)``; ``update`` is never modified."""
        check_weight("update weight", weight)
        check_same_layout(self._specs, specs_of(update))
        scale = weight * clip_scale(distance(update, self._reference), self._clip_norm)
        for name, total in self._sums.items():
            ref_flat, upd_flat = flat(self._reference[name]), flat(update[name])
            for block in coordinate_blocks(total.size, 2):
                diff = upd_flat[block].astype(np.float64) - ref_flat[block]
                total[block] += scale * diff
        self.total_weight += float(weight)
        self.count += 1

    def shifted_mean(
        self, noise_std: float = 0.0, rng: np.random.Generator | None = None
    ) -> Params:
        """``g + sums / total_weight`` (plus N(0, noise_std^2) per coordinate if asked), in
        each tensor's own dtype."""
        if self.count == 0:
            raise ConfigError("no update was added; a mean of nothing is undefined")
        result: Params = {}
        for spec in self._specs:
            out = np.empty(spec.shape, dtype=spec.numpy_dtype)
            out_flat, ref_flat = out.reshape(-1), flat(self._reference[spec.name])
            sums = self._sums[spec.name]
            for block in coordinate_blocks(spec.size, 1):
                values = ref_flat[block] + sums[block] / self.total_weight
                if rng is not None and noise_std > 0:
                    values += rng.normal(0.0, noise_std, size=values.shape)
                out_flat[block] = values
            result[spec.name] = out
        return result


class NormBoundedFold:
    """The streaming form of `NormBounding`."""

    def __init__(self, reference: Update, clip_norm: float) -> None:
        self._sum = ClippedSumFold(reference, clip_norm)

    def add(self, update: Update, weight: float) -> None:
        self._sum.add(update, weight)

    def result(self) -> tuple[Params, float]:
        return self._sum.shifted_mean(), self._sum.total_weight


@dataclass(frozen=True)
class NormBounding(MergesByWeightedMean, SameEveryRound):
    """Clip each update's difference from the global model to L2 norm ``clip_norm`` (C),
    then take the weighted mean by example counts. See the module docstring for the formula.

    Choose C near the typical honest update norm (e.g. the median of recent rounds): larger
    bounds nothing, smaller slows honest training.
    """

    name: ClassVar[str] = "norm_bounding"
    streaming: ClassVar[bool] = True
    min_updates: ClassVar[int] = 1

    clip_norm: float = 1.0

    def __post_init__(self) -> None:
        check_clip_norm(self.name, self.clip_norm)

    def fold(self, reference: Update) -> NormBoundedFold:
        return NormBoundedFold(reference, self.clip_norm)

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        return fold_all(self, updates, weights, reference)

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Exact: partials are already inside the C-ball, so clipping them again would do
        nothing; the weighted mean of partials is the flat rule."""
        return weighted_merge(partials, weights, reference)
