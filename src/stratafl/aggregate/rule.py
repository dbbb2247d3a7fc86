"""The contract every aggregation rule keeps, and the input checks they share.

A round with M combiners runs a rule twice::

    partial_k, weight_k = rule.aggregate(updates_k, weights_k, reference)   # combiner k
    merged, weight      = rule.merge(partials, partial_weights, reference)  # reducer

``reference`` is the global model the round started from. A *streaming* rule can also be
run one update at a time at the combiner, in O(model) memory::

    fold = rule.fold(reference)
    fold.add(update, weight)            # as each update arrives
    partial_k, weight_k = fold.result()

which gives the same partial as ``aggregate``. The reducer runs the same code: a streaming
rule's partials fold as they arrive too (``rule.partial_fold(reference)``, the weighted mean
of the partials), the others are spooled and merged at the end. A rule that draws
randomness is re-keyed for each round and combiner with ``rule.for_round(round, key)``;
the others return themselves. For every rule, ``merge`` of a single
partial returns that partial, so a federation with one combiner computes exactly the flat
rule. What ``merge`` means for M > 1 is stated by each rule (docs/aggregators.md).

A rule that keeps some inputs and drops the others (Krum, Multi-Krum, Bulyan, FLAME) is
also `SelectsInputs`: ``aggregate_selecting`` gives the same result and says which inputs
it left out and why, so a round can tell each client what became of its update.

Only FedAvg takes partial updates (a client sends some of its tensors; the weights become
per tensor, see `WeightedMeanFold`); every other rule refuses one in `check_inputs`, with
the fix in the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol, Self, runtime_checkable

import numpy as np

from stratafl.aggregate.blocks import coordinatewise
from stratafl.aggregate.mean import WeightedMeanFold
from stratafl.errors import ConfigError
from stratafl.params import (
    Params,
    TensorSpec,
    check_same_layout,
    check_subset_layout,
    specs_of,
)

Update = Mapping[str, np.ndarray]
"""One client update or one combiner partial: tensor name -> array (possibly a memmap)."""


class Fold(Protocol):
    """An accumulator that takes updates one at a time."""

    def add(self, update: Update, weight: float) -> None: ...

    def result(self) -> tuple[Params, float]: ...


class AggregationRule(Protocol):
    """A pure rule: arrays and weights in, arrays and a weight out; inputs never modified."""

    @property
    def name(self) -> str:
        """The registry name, e.g. ``"trimmed_mean"``."""
        ...

    @property
    def streaming(self) -> bool:
        """True if `fold` works: the rule can take one update at a time."""
        ...

    @property
    def min_updates(self) -> int:
        """The fewest updates `aggregate` accepts (check ``min_clients`` against it)."""
        ...

    def fold(self, reference: Update) -> Fold:
        """A streaming accumulator; raises `ConfigError` if the rule is not streaming."""
        ...

    def partial_fold(self, reference: Update) -> Fold:
        """How the reducer folds partials as they arrive (streaming rules only)."""
        ...

    def for_round(self, round_number: int, combiner_key: int) -> Self:
        """This rule as one combiner runs it in one round (fresh randomness, if any)."""
        ...

    def aggregate(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """The rule over client updates: the partial and the weight it carries onwards."""
        ...

    def merge(
        self, partials: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        """The rule across combiner partials (identity for a single partial)."""
        ...


LeftOut = dict[int, str]
"""The inputs a selecting rule left out of its result: input index -> why, in a sentence."""


@runtime_checkable
class SelectsInputs(Protocol):
    """A rule whose result uses some of its inputs only, and can say which it dropped."""

    def aggregate_selecting(
        self, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float, LeftOut]:
        """`aggregate`'s result, and the updates it left out (index -> why)."""
        ...


class AggregatesBySelecting:
    """A `SelectsInputs` rule whose `aggregate` is its `aggregate_selecting` without the
    report: one computation, whichever a caller asks for."""

    def aggregate(
        self: SelectsInputs, updates: Sequence[Update], weights: Sequence[float], reference: Update
    ) -> tuple[Params, float]:
        params, weight, _ = self.aggregate_selecting(updates, weights, reference)
        return params, weight


def check_inputs(
    rule: str,
    updates: Sequence[Update],
    weights: Sequence[float],
    reference: Update,
    *,
    partial: bool = False,
) -> list[TensorSpec]:
    """Raise `ConfigError` unless there is one positive finite weight per update and every
    update has the reference's layout (with ``partial``: some of its tensors, at least
    one); return the reference's specs.

    Only headers are compared, so this reads no array data.
    """
    if len(updates) != len(weights):
        raise ConfigError(
            f"{rule}: need one weight per update, got {len(updates)} updates and "
            f"{len(weights)} weights"
        )
    if not updates:
        raise ConfigError(f"{rule}: no update to aggregate; wait for at least one client")
    for index, weight in enumerate(weights):
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"{rule}: weight of update {index} must be a positive number, got {weight}; "
                "send the number of training examples"
            )
    specs = specs_of(reference)
    names = {spec.name for spec in specs}
    for index, update in enumerate(updates):
        if partial:
            check_subset_layout(specs, specs_of(update))
        elif update and names.issuperset(update) and len(update) < len(names):
            raise ConfigError(
                f"{rule} cannot aggregate a partial update: update {index} holds "
                f"{len(update)} of the model's {len(names)} tensors; only fedavg takes "
                "partial updates: use aggregator 'fedavg' or partial_updates 'none'"
            )
        else:
            check_same_layout(specs, specs_of(update))
    return specs


def require_updates(rule: str, count: int, minimum: int, why: str) -> None:
    """Raise `ConfigError` if ``count < minimum``, with the reason the rule needs that many."""
    if count < minimum:
        raise ConfigError(
            f"{rule} needs at least {minimum} updates ({why}), got {count}; "
            "raise min_clients or lower the rule's tolerance"
        )


def not_streaming(rule: str) -> ConfigError:
    """The error a non-streaming rule's `fold` raises."""
    return ConfigError(
        f"{rule} needs every update at once and cannot fold them one by one; "
        "spool the updates and call aggregate()"
    )


class SameEveryRound:
    """A rule that draws no randomness: one rule for every round and every combiner."""

    def for_round(self, round_number: int, combiner_key: int) -> Self:
        return self


class MergesByWeightedMean:
    """A streaming rule: its partials merge by their weighted mean, folded as they arrive
    (per tensor, for a partial made of partial updates; see `WeightedMeanFold`)."""

    def partial_fold(self, reference: Update) -> Fold:
        return WeightedMeanFold(specs_of(reference), reference)


class NeedsEveryInput:
    """A rule that needs every update (and every partial) at once: nothing folds."""

    name: ClassVar[str]

    def fold(self, reference: Update) -> Fold:
        raise not_streaming(self.name)

    def partial_fold(self, reference: Update) -> Fold:
        raise not_streaming(self.name)


def weighted_merge(
    partials: Sequence[Update],
    weights: Sequence[float],
    reference: Update,
    *,
    partial: bool = False,
) -> tuple[Params, float]:
    """Weighted mean of partials with the total weight: how linear rules merge exactly.

    With ``partial``, a partial may hold only some tensors: each counts with its partial's
    weight, and a tensor no partial holds keeps the reference's value.
    """
    specs = check_inputs("merge", partials, weights, reference, partial=partial)
    fold = WeightedMeanFold(specs, reference)
    for partial_update, weight in zip(partials, weights, strict=True):
        fold.add(partial_update, weight)
    return fold.result()


class _Streaming(Protocol):
    @property
    def name(self) -> str: ...

    def fold(self, reference: Update) -> Fold: ...


def fold_all(
    rule: _Streaming,
    updates: Sequence[Update],
    weights: Sequence[float],
    reference: Update,
    *,
    partial: bool = False,
) -> tuple[Params, float]:
    """``aggregate`` of a streaming rule: its fold over every update, in order (with
    ``partial``, updates may hold only some tensors)."""
    check_inputs(rule.name, updates, weights, reference, partial=partial)
    fold = rule.fold(reference)
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    return fold.result()


def plain_mean(updates: Sequence[Update], specs: Sequence[TensorSpec]) -> Params:
    """Unweighted coordinate mean, blockwise (rules that ignore example weights use it)."""
    return coordinatewise(updates, specs, lambda rows: rows.mean(axis=0))
