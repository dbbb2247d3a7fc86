"""The Robust Learning Rate (Ozdayi, Kantarcioglu, Gel 2021, "Defending against Backdoors
in Federated Learning with Robust Learning Rate", AAAI). Over n updates with global model
g, deltas d_i = x_i - g and example counts n_i:

    s[j]   = sum_i sign(d_i[j])                      (one vote per client, sign(0) = 0)
    lr[j]  = +eta if |s[j]| >= theta else -eta
    x      = g + lr * sum_i n_i d_i / sum_i n_i      (element-wise product)

A backdoor needs coordinates the honest clients do not care about; there their signs
disagree, the step is reversed, and the attacker's push is undone instead of applied.

Signs and weighted sums both add up, so the rule folds one update at a time in
O(model) memory (a float64 sum and an int32 vote count per coordinate). Across tiers each
combiner applies the rule to its own clients with the same theta, and the reducer takes
the weighted mean of the partials by their examples. That is not the flat rule: votes are
counted per combiner, so theta is a count of a combiner's clients (each combiner needs
n_k >= theta) and the sign of a coordinate's step can differ between combiners. Where every
client agrees in sign and theta <= n_k everywhere, it is FedAvg at every tier, so exact.
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
    require_updates,
    weighted_merge,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of


class RobustLRFold:
    """The streaming form of `RobustLR`: running sign votes and weighted delta sums."""

    def __init__(self, reference: Update, rule: RobustLR) -> None:
        self._reference = reference
        self._rule = rule
        self._specs = specs_of(reference)
        self._sums = {s.name: np.zeros(s.size, dtype=np.float64) for s in self._specs}
        self._votes = {s.name: np.zeros(s.size, dtype=np.int32) for s in self._specs}
        self._total_weight = 0.0
        self._count = 0

    def add(self, update: Update, weight: float) -> None:
        """Fold one update's signs and ``weight`` times its delta; ``update`` is unchanged."""
        check_weight("update weight", weight)
        check_same_layout(self._specs, specs_of(update))
        for spec in self._specs:
            ref_flat, upd_flat = flat(self._reference[spec.name]), flat(update[spec.name])
            sums, votes = self._sums[spec.name], self._votes[spec.name]
            for block in coordinate_blocks(spec.size, 2):
                diff = upd_flat[block].astype(np.float64) - ref_flat[block]
                votes[block] += np.sign(diff).astype(np.int32)
                sums[block] += weight * diff
        self._total_weight += float(weight)
        self._count += 1

    def result(self) -> tuple[Params, float]:
        """``g + lr * weighted mean delta`` in each tensor's dtype, and the total weight."""
        theta, eta = self._rule.theta, self._rule.server_lr
        require_updates(f"rlr with theta={theta}", self._count, theta, "|sum of signs| >= theta")
        result: Params = {}
        for spec in self._specs:
            out = np.empty(spec.shape, dtype=spec.numpy_dtype)
            out_flat, ref_flat = flat(out), flat(self._reference[spec.name])
            sums, votes = self._sums[spec.name], self._votes[spec.name]
            for block in coordinate_blocks(spec.size, 2):
                rate = np.where(np.abs(votes[block]) >= theta, eta, -eta)
                out_flat[block] = ref_flat[block] + rate * (sums[block] / self._total_weight)
            result[spec.name] = out
        return result, self._total_weight


@dataclass(frozen=True)
class RobustLR(MergesByWeightedMean, SameEveryRound):
    """FedAvg whose server learning rate is reversed on every coordinate where fewer than
    ``theta`` client votes separate the two signs (module docstring).

    ``theta`` (default 4, the paper's value for 10 clients per round): the least
    ``|sum_i sign(d_i[j])|`` for a normal step; set it above the number of attackers you
    expect per combiner and at most the number of clients. A combiner needs at least theta
    updates, since with fewer every coordinate would be reversed (gradient ascent).
    ``server_lr`` (eta, default 1.0): the step size; 1.0 with unanimous signs is FedAvg.
    """

    name: ClassVar[str] = "rlr"
    streaming: ClassVar[bool] = True

    theta: int = 4
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if self.theta < 1:
            raise ConfigError(
                f"rlr: theta={self.theta} must be >= 1 (client votes needed for a normal "
                "step; the paper uses 4 for 10 clients)"
            )
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ConfigError(
                f"rlr: server_lr={self.server_lr} must be a positive number (eta; 1.0 is "
                "FedAvg's step)"
            )

    @property
    def min_updates(self) -> int:
        return self.theta

    def fold(self, reference: Update) -> RobustLRFold:
        return RobustLRFold(reference, self)

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        return fold_all(self, updates, weights, reference)

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Weighted mean of the combiners' RLR results by their examples (votes are
        counted per combiner; see the module docstring)."""
        return weighted_merge(partials, weights, reference)
