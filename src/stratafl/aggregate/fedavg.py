"""FedAvg as an aggregation rule (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data").

    x = sum_i n_i x_i / sum_i n_i          (n_i: examples behind update i)

Linear, so it folds one update at a time and splits across tiers exactly: the weighted mean
of the combiners' weighted means, each weighted by its examples, is the flat weighted mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from stratafl.aggregate.mean import WeightedMeanFold
from stratafl.aggregate.rule import (
    MergesByWeightedMean,
    SameEveryRound,
    Update,
    fold_all,
    weighted_merge,
)
from stratafl.params import Params, specs_of


@dataclass(frozen=True)
class FedAvg(MergesByWeightedMean, SameEveryRound):
    """Weighted mean by example counts; the default rule."""

    name: ClassVar[str] = "fedavg"
    streaming: ClassVar[bool] = True
    min_updates: ClassVar[int] = 1

    def fold(self, reference: Update) -> WeightedMeanFold:
        return WeightedMeanFold(specs_of(reference))

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        return fold_all(self, updates, weights, reference)

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Exact: the weighted mean of partials weighted by their examples."""
        return weighted_merge(partials, weights, reference)
