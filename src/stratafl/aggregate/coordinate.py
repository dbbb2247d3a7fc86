"""Coordinate-wise robust rules (Yin et al. 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Each output coordinate depends only on that coordinate across the n updates, so the rules
run block by block over stacked coordinates. Both ignore example weights: a weight is
whatever a client claims, and letting it move a median would hand an attacker the lever
the rule exists to remove. The weight a partial carries onwards is still the sum of its
inputs' weights.

Across tiers the reducer applies the same rule to the combiners' partials (median of
medians, trimmed mean of trimmed means). Neither equals the flat rule for M > 1, but the
range guarantee composes: if every combiner keeps its output inside the range of its honest
clients, the reducer's output is inside the range of all honest clients; and since the
reducer is robust too, a minority of combiners whose clients overwhelmed them is outvoted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stratafl.aggregate.blocks import coordinatewise
from stratafl.aggregate.rule import NeedsEveryInput, SameEveryRound, Update, check_inputs
from stratafl.errors import ConfigError
from stratafl.params import Params


@dataclass(frozen=True)
class Median(NeedsEveryInput, SameEveryRound):
    """Coordinate-wise median: ``x[j] = median_i x_i[j]`` (mean of the two middle values
    when n is even).

    Each coordinate stays within the range of the honest values as long as fewer than half
    of the updates are Byzantine. Yin et al. 2018, Algorithm 1 with option I.
    """

    name: ClassVar[str] = "median"
    streaming: ClassVar[bool] = False
    min_updates: ClassVar[int] = 1

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        specs = check_inputs(self.name, updates, weights, reference)
        result = coordinatewise(updates, specs, lambda rows: np.median(rows, axis=0))
        return result, float(sum(weights))

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Median of the combiners' medians (not the global median)."""
        return self.aggregate(partials, weights, reference)


@dataclass(frozen=True)
class TrimmedMean(NeedsEveryInput, SameEveryRound):
    """Coordinate-wise beta-trimmed mean: per coordinate, sort the n values, drop the
    ``k = floor(beta * n)`` smallest and the k largest, average the remaining n - 2k.

    ``beta`` in [0, 0.5) is the fraction of Byzantine updates expected; if at most k updates
    are Byzantine, each coordinate stays within the range of the honest values. beta = 0 is
    the plain (unweighted) mean. Yin et al. 2018, Algorithm 1 with option II.
    """

    name: ClassVar[str] = "trimmed_mean"
    streaming: ClassVar[bool] = False
    min_updates: ClassVar[int] = 1

    beta: float = 0.1

    def __post_init__(self) -> None:
        if not (0.0 <= self.beta < 0.5):
            raise ConfigError(
                f"trimmed_mean: beta={self.beta} must be in [0, 0.5): it is the fraction "
                "trimmed from each end, e.g. beta=0.1"
            )

    def trimmed(self, count: int) -> int:
        """k, the values dropped at each end for ``count`` updates (a tiny epsilon keeps
        e.g. 0.29 * 100 from flooring to 28)."""
        return math.floor(self.beta * count + 1e-9)

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        specs = check_inputs(self.name, updates, weights, reference)
        k = self.trimmed(len(updates))
        n = len(updates)

        def trimmed_mean(rows: np.ndarray) -> np.ndarray:
            return np.sort(rows, axis=0)[k : n - k].mean(axis=0)

        return coordinatewise(updates, specs, trimmed_mean), float(sum(weights))

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Trimmed mean of the combiners' trimmed means with the same beta (so nothing is
        trimmed while ``beta * M < 1``: then it is the unweighted mean of the partials)."""
        return self.aggregate(partials, weights, reference)
