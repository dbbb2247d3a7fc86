"""FedAvg as an aggregation rule (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data").

    x = sum_i n_i x_i / sum_i n_i          (n_i: examples behind update i)

Linear, so it folds one update at a time and splits across tiers exactly: the weighted mean
of the combiners' weighted means, each weighted by its examples, is the flat weighted mean.

It is the one rule that takes partial updates (a client sends only some tensors, to save
traffic; Alawadi et al. 2024): each tensor is the weighted mean over the updates that sent
it, and keeps the reference's value if none did. That stays exact across tiers because a
combiner's fold hands on one weight sum per tensor (`WeightedMeanFold.tensor_weights`).
A median, a Krum score or a clipping norm over updates that hold different tensors has no
agreed meaning, so the other rules refuse partial updates (`require_partial_updates`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from stratafl.aggregate.mean import WeightedMeanFold
from stratafl.aggregate.rule import (
    AggregationRule,
    MergesByWeightedMean,
    SameEveryRound,
    Update,
    fold_all,
    weighted_merge,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, specs_of


@dataclass(frozen=True)
class FedAvg(MergesByWeightedMean, SameEveryRound):
    """Weighted mean by example counts; the default rule. Updates may be partial."""

    name: ClassVar[str] = "fedavg"
    streaming: ClassVar[bool] = True
    min_updates: ClassVar[int] = 1

    def fold(self, reference: Update) -> WeightedMeanFold:
        return WeightedMeanFold(specs_of(reference), reference)

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        return fold_all(self, updates, weights, reference, partial=True)

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Exact: the weighted mean of partials weighted by their examples. A partial that
        holds only some tensors counts with its weight in each; partials whose tensors
        carry different weight sums merge exactly through ``partial_fold(reference)``
        (``add(partial, weight, tensor_weights=...)``), as the reducer does."""
        return weighted_merge(partials, weights, reference, partial=True)


def require_partial_updates(rule: AggregationRule) -> None:
    """Raise `ConfigError` naming the fix unless ``rule`` aggregates partial updates."""
    if not isinstance(rule, FedAvg):
        raise ConfigError(
            f"partial updates need the fedavg rule (a weighted mean per tensor), but the "
            f"aggregator uses {rule.name!r}: use aggregator 'fedavg' (a server optimiser "
            "after '+' is fine) or partial_updates 'none'"
        )
