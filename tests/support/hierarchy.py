"""A rule's result over updates, flat and as the tiers compute it: each combiner folds its
group, the reducer merges the partials. Property tests compare the two."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate.rule import AggregationRule
from stratafl.params import Params

Update = Mapping[str, np.ndarray]


def flat_and_merged(
    rule: AggregationRule,
    updates: Sequence[Update],
    groups: Sequence[Sequence[float]],
    reference: Update,
) -> tuple[Params, Params]:
    """``(flat, merged)``: ``rule`` over all ``updates`` at once, and over consecutive groups
    of them weighted by ``groups`` (one list of weights per combiner), then merged."""
    weights = [w for group in groups for w in group]
    flat, _ = rule.aggregate(updates, weights, reference)
    partials, partial_weights, start = [], [], 0
    for group in groups:
        partial, weight = rule.aggregate(updates[start : start + len(group)], group, reference)
        partials.append(partial)
        partial_weights.append(weight)
        start += len(group)
    merged, _ = rule.merge(partials, partial_weights, reference)
    return flat, merged
