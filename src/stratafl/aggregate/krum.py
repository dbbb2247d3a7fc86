"""Distance-based selection rules: Krum, Multi-Krum (Blanchard et al. 2017, "Machine
Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS) and Bulyan
(El Mhamdi et al. 2018, "The Hidden Vulnerability of Distributed Learning in Byzantium",
ICML).

All three start from the squared distances ``d_ij = ||x_i - x_j||^2`` over all tensors,
accumulated block by block so that updates on disk are never loaded whole. Krum's score of
update i is the sum of its ``n - f - 2`` smallest distances to the others; an update that
sits in a dense cluster scores low, one far from the rest scores high.

Example weights are ignored (a weight is a client's claim; see `coordinate`); a partial
carries the sum of its inputs' weights onwards.

Across tiers the reducer applies the same rule to the combiners' partials with f lowered
to the largest tolerance M partials support (Krum and Multi-Krum: M >= 2f + 3; Bulyan:
M >= 4f + 3). With fewer than 3 partials no selection is possible and the reducer takes
their unweighted mean, which for one partial is that partial. The guarantee that remains
is per combiner: combiner k tolerates f Byzantine clients if it has n_k >= 2f + 3
(Bulyan: 4f + 3) of them; the reducer adds tolerance of Byzantine partials only when M is
large enough for its lowered f to be positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from stratafl.aggregate.blocks import coordinate_blocks, coordinatewise, stack_block
from stratafl.aggregate.rule import (
    AggregatesBySelecting,
    LeftOut,
    NeedsEveryInput,
    SameEveryRound,
    Update,
    check_inputs,
    plain_mean,
    require_updates,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, TensorSpec


def pairwise_sq_distances(updates: Sequence[Update], specs: Sequence[TensorSpec]) -> np.ndarray:
    """The (n, n) matrix of squared L2 distances between updates over all tensors.

    Per block, ``||a - b||^2 = |a|^2 + |b|^2 - 2 a.b`` from one Gram matrix (a BLAS call
    instead of n passes over the block); the rows are centred first, which leaves the
    distances unchanged and keeps the subtraction from cancelling digits.
    """
    n = len(updates)
    distances = np.zeros((n, n), dtype=np.float64)
    for spec in specs:
        for block in coordinate_blocks(spec.size, n):
            rows = stack_block(updates, spec.name, block)
            rows -= rows.mean(axis=0)
            gram = rows @ rows.T
            norms = np.diag(gram)
            distances += norms[:, None] + norms[None, :] - 2.0 * gram
    np.fill_diagonal(distances, 0.0)
    return np.maximum(distances, 0.0)


def krum_scores(distances: np.ndarray, candidates: Sequence[int], f: int) -> np.ndarray:
    """Krum score of each candidate among ``candidates``: the sum of its ``max(1, c - f - 2)``
    smallest distances to the other candidates (c = number of candidates)."""
    index = np.asarray(candidates)
    sub = distances[np.ix_(index, index)]
    neighbours = max(1, len(index) - f - 2)
    others = [np.delete(row, i) for i, row in enumerate(sub)]
    return np.array([np.sort(row)[:neighbours].sum() for row in others])


def _check_f(rule: str, f: int) -> None:
    if f < 0:
        raise ConfigError(f"{rule}: f={f} must be >= 0 (the number of Byzantine updates)")


def _copy_of(update: Update, specs: Sequence[TensorSpec]) -> Params:
    return {spec.name: np.array(update[spec.name], dtype=spec.numpy_dtype) for spec in specs}


def _merge_lowering_f(
    rule: Krum | MultiKrum | Bulyan,
    supported_f: int,
    partials: Sequence[Update],
    weights: Sequence[float],
    reference: Update,
) -> tuple[Params, float]:
    if supported_f < 0:
        specs = check_inputs(rule.name, partials, weights, reference)
        return plain_mean(partials, specs), float(sum(weights))
    return replace(rule, f=min(rule.f, supported_f)).aggregate(partials, weights, reference)


@dataclass(frozen=True)
class Krum(AggregatesBySelecting, NeedsEveryInput, SameEveryRound):
    """Krum: the single update with the lowest score,
    ``i* = argmin_i sum_{j in N_i} ||x_i - x_j||^2`` with N_i the n - f - 2 updates nearest
    to x_i. Ties go to the earliest update.

    ``f`` is the number of Byzantine updates tolerated; needs n >= 2f + 3. Blanchard et al.
    2017, section 4.
    """

    name: ClassVar[str] = "krum"
    streaming: ClassVar[bool] = False

    f: int = 1

    def __post_init__(self) -> None:
        _check_f(self.name, self.f)

    @property
    def min_updates(self) -> int:
        return 2 * self.f + 3

    def aggregate_selecting(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float, LeftOut]:
        """`aggregate`, and every update but the winner as left out."""
        specs = check_inputs(self.name, updates, weights, reference)
        require_updates(f"krum with f={self.f}", len(updates), self.min_updates, "n > 2f + 2")
        scores = krum_scores(pairwise_sq_distances(updates, specs), range(len(updates)), self.f)
        winner = int(np.argmin(scores))
        why = "krum keeps the one update nearest its neighbours; another scored lower"
        left_out = {i: why for i in range(len(updates)) if i != winner}
        return _copy_of(updates[winner], specs), float(sum(weights)), left_out

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Krum over the partials with f lowered to ``(M - 3) // 2``; the unweighted mean
        for M < 3."""
        return _merge_lowering_f(self, (len(partials) - 3) // 2, partials, weights, reference)


@dataclass(frozen=True)
class MultiKrum(AggregatesBySelecting, NeedsEveryInput, SameEveryRound):
    """Multi-Krum: the unweighted mean of the ``m`` updates with the lowest Krum scores
    (scores computed once over all n updates; ties go to the earlier update).

    ``f``: Byzantine updates tolerated, needs n >= 2f + 3. ``m``: updates averaged, between
    1 (Krum) and n; ``None`` means n - f. Blanchard et al. 2017, section 5 ("m-Krum").
    """

    name: ClassVar[str] = "multikrum"
    streaming: ClassVar[bool] = False

    f: int = 1
    m: int | None = None

    def __post_init__(self) -> None:
        _check_f(self.name, self.f)
        if self.m is not None and self.m < 1:
            raise ConfigError(
                f"multikrum: m={self.m} must be >= 1 (updates averaged), or unset for n - f"
            )

    @property
    def min_updates(self) -> int:
        return max(2 * self.f + 3, self.m or 0)

    def selected(self, count: int) -> int:
        """How many updates are averaged when there are ``count``."""
        return count - self.f if self.m is None else self.m

    def aggregate_selecting(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float, LeftOut]:
        """`aggregate`, and the n - m updates with the highest scores as left out."""
        specs = check_inputs(self.name, updates, weights, reference)
        require_updates(f"multikrum with f={self.f}", len(updates), 2 * self.f + 3, "n > 2f + 2")
        m = self.selected(len(updates))
        require_updates(f"multikrum with m={m}", len(updates), m, "it averages m of them")
        scores = krum_scores(pairwise_sq_distances(updates, specs), range(len(updates)), self.f)
        ranking = [int(i) for i in np.argsort(scores, kind="stable")]
        chosen = sorted(ranking[:m])
        left_out = {
            i: f"multikrum averages the {m} updates nearest their neighbours; this one "
            f"ranked {rank + 1} of {len(updates)}"
            for rank, i in enumerate(ranking)
            if rank >= m
        }
        mean = plain_mean([updates[i] for i in chosen], specs)
        return mean, float(sum(weights)), left_out

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Multi-Krum over the partials with f lowered to ``(M - 3) // 2`` and m capped at
        M - f; the unweighted mean for M < 3."""
        supported = (len(partials) - 3) // 2
        f = min(self.f, supported)
        m = None if self.m is None else min(self.m, len(partials) - f)
        rule = replace(self, m=m)
        return _merge_lowering_f(rule, supported, partials, weights, reference)


@dataclass(frozen=True)
class Bulyan(AggregatesBySelecting, NeedsEveryInput, SameEveryRound):
    """Bulyan: Krum recursively selects theta = n - 2f updates (each round removes the
    current Krum winner; scores count ``max(1, c - f - 2)`` neighbours among the c updates
    left), then each coordinate is the mean of the beta = theta - 2f selected values closest
    to the selected values' median.

    ``f``: Byzantine updates tolerated; needs n >= 4f + 3. With f = 0 it is the unweighted
    mean. El Mhamdi et al. 2018, Algorithm 1 with Krum as the selection rule.
    """

    name: ClassVar[str] = "bulyan"
    streaming: ClassVar[bool] = False

    f: int = 1

    def __post_init__(self) -> None:
        _check_f(self.name, self.f)

    @property
    def min_updates(self) -> int:
        return 4 * self.f + 3

    def aggregate_selecting(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float, LeftOut]:
        """`aggregate`, and the 2f updates Krum did not select as left out (a selected
        update still loses the coordinates that lie far from the median)."""
        specs = check_inputs(self.name, updates, weights, reference)
        n = len(updates)
        require_updates(f"bulyan with f={self.f}", n, self.min_updates, "n >= 4f + 3")
        distances = pairwise_sq_distances(updates, specs)
        remaining = list(range(n))
        selected: list[int] = []
        for _ in range(n - 2 * self.f):
            winner = remaining[int(np.argmin(krum_scores(distances, remaining, self.f)))]
            selected.append(winner)
            remaining.remove(winner)
        beta = len(selected) - 2 * self.f

        def closest_to_median_mean(rows: np.ndarray) -> np.ndarray:
            gap = np.abs(rows - np.median(rows, axis=0))
            nearest = np.argsort(gap, axis=0, kind="stable")[:beta]
            return np.take_along_axis(rows, nearest, axis=0).mean(axis=0)

        chosen = [updates[i] for i in sorted(selected)]
        why = f"bulyan keeps the {len(selected)} updates Krum selects one by one; not this one"
        left_out = {i: why for i in remaining}
        trimmed = coordinatewise(chosen, specs, closest_to_median_mean)
        return trimmed, float(sum(weights)), left_out

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """Bulyan over the partials with f lowered to ``(M - 3) // 4`` (f = 0 is the
        unweighted mean); the unweighted mean for M < 3."""
        return _merge_lowering_f(self, (len(partials) - 3) // 4, partials, weights, reference)
