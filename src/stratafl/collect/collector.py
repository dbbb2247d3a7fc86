"""Collect updates (at a combiner) or partials (at the reducer) for one aggregation rule.

The combiner and the reducer run the same code: ``Collector.for_updates`` and
``Collector.for_partials`` differ only in which side of the rule they ask for. Streaming
rules fold each staged file as it arrives and delete it: memory O(model). Rules that need
every input keep the staged files (the spool) and run the rule over them at the end, block
by block through per-access memory maps: memory O(model + block), disk O(inputs x model).
Either way an input is checked whole before it counts, and a bad one is refused without
touching what was collected so far.

A rule that selects among its inputs (`SelectsInputs`) says which it left out; the
collector keeps that as ``left_out``, keyed by what each input was added with (a task),
so a combiner can tell each client whether its update counted.

Weights are capped at the combiner (`stratafl.aggregate.weights`): with a round's
``weight_cap`` each update folds as it arrives with its claim clamped to the cap; with a
``median_cap_ratio`` instead the cap depends on every claim of the round, so the updates
are spooled even for a streaming rule and folded at the end with their capped weights
(memory still O(model), disk O(updates x model)). A rule that weighs by count ignores
the weights either way.

Partial updates (some tensors only; FedAvg alone takes them) fold per tensor: a combiner
hands on its partial with each tensor's weight sum (`partial_result`), and the reducer
adds each tensor of it with that sum (``add(..., tensor_weights=...)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from stratafl.aggregate import (
    AggregationRule,
    Fold,
    LeftOut,
    SelectsInputs,
    WeightedMeanFold,
    check_finite,
)
from stratafl.aggregate.fedavg import require_partial_updates
from stratafl.aggregate.weights import capped_weights
from stratafl.errors import ConfigError, UpdateRejected
from stratafl.modelfile.codec import MappedModelFile
from stratafl.params import Params, TensorSpec, specs_of, total_bytes

Combine = Callable[
    [Sequence[Mapping[str, np.ndarray]], Sequence[float]], tuple[Params, float, LeftOut]
]


class Collector:
    """Takes staged model files one at a time; ``result()`` gives (params, weight)."""

    def __init__(
        self,
        specs: Sequence[TensorSpec],
        fold: Fold | None,
        combine: Combine,
        *,
        weight_cap: int = 0,
        median_cap_ratio: float = 0.0,
    ) -> None:
        self._specs = list(specs)
        self._fold = fold
        self._combine = combine
        self._weight_cap = weight_cap
        self._median_cap_ratio = 0.0 if weight_cap > 0 else median_cap_ratio
        self._spooled: list[tuple[Path, float, str]] = []
        self.left_out: dict[str, str] = {}
        """After `result`: the inputs the rule left out, by the key each was added with."""
        self.count = 0
        self.bytes_in = 0
        """Bytes of the inputs taken: with `seconds`, the fold's throughput."""
        self.seconds = 0.0
        """Seconds spent checking, folding and combining the inputs."""

    @classmethod
    def for_updates(
        cls,
        rule: AggregationRule,
        reference: Mapping[str, np.ndarray],
        *,
        partial: bool = False,
        weight_cap: int = 0,
        median_cap_ratio: float = 0.0,
    ) -> Collector:
        """A combiner's side of ``rule``: client updates in, one partial out, each update
        weighing its claim capped by ``weight_cap`` or ``median_cap_ratio`` (see
        `stratafl.aggregate.weights.capped_weights`). With ``partial`` (the session sends
        partial updates), a `ConfigError` unless the rule takes them."""
        if partial:
            require_partial_updates(rule)
        fold = rule.fold(reference) if rule.streaming else None

        def combine(
            updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
        ) -> tuple[Params, float, LeftOut]:
            if isinstance(rule, SelectsInputs):
                return rule.aggregate_selecting(updates, weights, reference)
            return (*rule.aggregate(updates, weights, reference), {})

        return cls(
            specs_of(reference),
            fold,
            combine,
            weight_cap=weight_cap,
            median_cap_ratio=median_cap_ratio,
        )

    @classmethod
    def for_partials(cls, rule: AggregationRule, reference: Mapping[str, np.ndarray]) -> Collector:
        """The reducer's side of ``rule``: combiner partials in, the merged model out."""
        fold = rule.partial_fold(reference) if rule.streaming else None
        return cls(
            specs_of(reference),
            fold,
            lambda partials, weights: (*rule.merge(partials, weights, reference), {}),
        )

    def add(
        self,
        staged: Path,
        weight: float,
        tensor_weights: Mapping[str, float] | None = None,
        *,
        key: str = "",
    ) -> None:
        """Check ``staged`` and fold it (deleting it) or keep it in the spool; ``key``
        names it in ``left_out``.

        Its layout was checked where it arrived; here its values are (NaN, Inf). A partial
        of partial updates comes with ``tensor_weights`` (each tensor's weight sum), which
        only a weighted-mean fold takes. Raises `UpdateRejected` with nothing collected
        changed.
        """
        started = time.perf_counter()
        update = MappedModelFile(staged)
        specs = [spec for spec in self._specs if spec.name in update]
        check_finite(update, specs)
        if tensor_weights:
            if not isinstance(self._fold, WeightedMeanFold):
                raise UpdateRejected(
                    "a partial with per-tensor weights reached a rule that merges only "
                    "whole partials; partial updates need the fedavg rule"
                )
            self._fold.add(update, weight, tensor_weights=tensor_weights)
            staged.unlink(missing_ok=True)
        elif self._fold is not None and self._median_cap_ratio <= 0:
            self._fold.add(update, self._capped(weight))
            staged.unlink(missing_ok=True)
        else:
            self._spooled.append((staged, weight, key))
        self.count += 1
        self.bytes_in += total_bytes(specs)
        self.seconds += time.perf_counter() - started

    def result(self) -> tuple[Params, float]:
        if self.count == 0:
            raise ConfigError("nothing was collected; a rule over no updates is undefined")
        started = time.perf_counter()
        try:
            weights = capped_weights(
                [w for _, w, _ in self._spooled],
                weight_cap=self._weight_cap,
                median_cap_ratio=self._median_cap_ratio,
            )
            if self._fold is not None:
                for (path, _, _), weight in zip(self._spooled, weights, strict=True):
                    self._fold.add(MappedModelFile(path), weight)  # median-capped: spooled
                return self._fold.result()
            inputs = [MappedModelFile(path) for path, _, _ in self._spooled]
            params, weight, left_out = self._combine(inputs, weights)
            self.left_out = {self._spooled[i][2]: why for i, why in left_out.items()}
            return params, weight
        finally:
            self.seconds += time.perf_counter() - started

    def _capped(self, claim: float) -> float:
        """A claim's weight when the round has a fixed ``weight_cap`` (else the claim)."""
        return min(claim, float(self._weight_cap)) if self._weight_cap > 0 else claim

    def partial_result(self) -> tuple[Params, float, dict[str, float]]:
        """`result` as a combiner hands it on: the tensors some update held, the total
        weight, and each of those tensors' weight sums; the sums are empty when every
        tensor has the total weight (full updates), which is what a reducer assumes."""
        params, weight = self.result()
        if not isinstance(self._fold, WeightedMeanFold):
            return params, weight, {}
        sums = self._fold.tensor_weights()
        if all(tensor_weight == weight for tensor_weight in sums.values()):
            return params, weight, {}
        held = {name: tensor_weight for name, tensor_weight in sums.items() if tensor_weight > 0}
        return {name: params[name] for name in held}, weight, held

    def discard(self) -> None:
        """Delete whatever is spooled (after the result is taken, or when a round is dropped)."""
        for path, _, _ in self._spooled:
            path.unlink(missing_ok=True)
        self._spooled.clear()
