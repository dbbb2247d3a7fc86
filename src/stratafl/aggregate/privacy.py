"""Central differential privacy, the Gaussian mechanism on clipped updates (McMahan et al.
2018, "Learning Differentially Private Recurrent Language Models", ICLR; Abadi et al. 2016,
"Deep Learning with Differential Privacy").

A building block, not a guarantee: there is no privacy accountant yet, so the (epsilon,
delta) spent over rounds is not tracked. Over n updates with global model g:

    delta_i = clip_C(x_i - g) = (x_i - g) * min(1, C / ||x_i - g||)
    x = g + (1/n) sum_i delta_i + N(0, (sigma * C / n)^2 I)

The mean is unweighted: with example weights, one client's influence (the sensitivity)
would be n_i C / sum n instead of C / n, and the counts themselves would be released.
Adding or removing one client moves the clipped sum by at most C, and the noise on the sum
has std sigma * C, so sigma is the noise multiplier of the Gaussian mechanism.

The combiner is the trusted curator of its clients: it adds the noise, so the controller
only ever sees noised partials. The weight a partial carries is its number of updates, and
the reducer takes the mean of partials weighted by those counts, adding no more noise: the
mean of the clipped deltas is then exactly the flat one; each combiner's noise protects its
own clients at multiplier sigma, and the merged noise has std
``sigma * C * sqrt(M) / N`` for M equal-sized combiners (sqrt(M) times the flat rule's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from stratafl.aggregate.clipping import ClippedSumFold, check_clip_norm
from stratafl.aggregate.mean import check_weight
from stratafl.aggregate.rule import (
    MergesByWeightedMean,
    Update,
    fold_all,
    weighted_merge,
)
from stratafl.errors import ConfigError
from stratafl.params import Params


class DPGaussianFold:
    """The streaming form of `DPGaussian`: clipped sum with unit weights, noise at the end."""

    def __init__(self, reference: Update, rule: DPGaussian) -> None:
        self._sum = ClippedSumFold(reference, rule.clip_norm)
        self._rule = rule

    def add(self, update: Update, weight: float) -> None:
        """Fold the clipped update; ``weight`` is checked but does not count (see module)."""
        check_weight("update weight", weight)
        self._sum.add(update, 1.0)

    def result(self) -> tuple[Params, float]:
        count = self._sum.count
        std = self._rule.noise_std(count) if count else 0.0
        return self._sum.shifted_mean(std, self._rule.generator()), float(count)


@dataclass(frozen=True)
class DPGaussian(MergesByWeightedMean):
    """Clip to ``clip_norm`` (C), average without weights, add Gaussian noise of std
    ``noise_multiplier * C / n`` (sigma * C / n) to every coordinate of the mean.

    ``seed``: None draws fresh OS entropy on every call (what a deployment wants); an integer
    makes the noise reproducible, and then ``noise_key`` must differ between rounds and
    between combiners, or the same noise would repeat and cancel out of differences: the
    runtime calls ``rule.for_round(round_number, combiner_key)``.
    """

    name: ClassVar[str] = "dp_gaussian"
    streaming: ClassVar[bool] = True
    min_updates: ClassVar[int] = 1

    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    seed: int | None = None
    noise_key: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_clip_norm(self.name, self.clip_norm)
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ConfigError(
                f"dp_gaussian: noise_multiplier={self.noise_multiplier} must be >= 0 "
                "(sigma; the noise std on the sum is sigma * clip_norm)"
            )
        if self.seed is not None and self.seed < 0:
            raise ConfigError(f"dp_gaussian: seed={self.seed} must be >= 0, or unset")

    def noise_std(self, count: int) -> float:
        """sigma * C / n: the std of the noise added to each coordinate of the mean."""
        return self.noise_multiplier * self.clip_norm / count

    def for_round(self, round_number: int, combiner_key: int) -> DPGaussian:
        """This rule with its noise stream keyed by the round and the combiner."""
        return replace(self, noise_key=(int(round_number), int(combiner_key)))

    def generator(self) -> np.random.Generator:
        """A fresh noise generator: reproducible iff ``seed`` is set."""
        return np.random.default_rng(
            np.random.SeedSequence(entropy=self.seed, spawn_key=self.noise_key)
        )

    def fold(self, reference: Update) -> DPGaussianFold:
        return DPGaussianFold(reference, self)

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """The noised clipped mean, and n (not the example total) as its weight."""
        return fold_all(self, updates, weights, reference)

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Mean of the noised partials weighted by their update counts; no further noise
        and no clipping (noise may push a partial outside the C-ball, legitimately)."""
        return weighted_merge(partials, weights, reference)
