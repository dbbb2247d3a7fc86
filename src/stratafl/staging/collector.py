"""Collect updates (at a combiner) or partials (at the reducer) for one aggregation rule.

The combiner and the reducer run the same code: ``Collector.for_updates`` and
``Collector.for_partials`` differ only in which side of the rule they ask for. Streaming
rules fold each staged file as it arrives and delete it: memory O(model). Rules that need
every input keep the staged files (the spool) and run the rule over them at the end, block
by block through per-access memory maps: memory O(model + block), disk O(inputs x model).
Either way an input is checked whole before it counts, and a bad one is refused without
touching what was collected so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from stratafl.aggregate import AggregationRule, Fold, check_finite
from stratafl.errors import ConfigError
from stratafl.modelfile import MappedModelFile
from stratafl.params import Params, TensorSpec, specs_of, total_bytes

Combine = Callable[[Sequence[Mapping[str, np.ndarray]], Sequence[float]], tuple[Params, float]]


class Collector:
    """Takes staged model files one at a time; ``result()`` gives (params, weight)."""

    def __init__(self, specs: Sequence[TensorSpec], fold: Fold | None, combine: Combine) -> None:
        self._specs = list(specs)
        self._fold = fold
        self._combine = combine
        self._spooled: list[tuple[Path, float]] = []
        self.count = 0
        self.bytes_in = 0
        """Bytes of the inputs taken: with `seconds`, the fold's throughput."""
        self.seconds = 0.0
        """Seconds spent checking, folding and combining the inputs."""

    @classmethod
    def for_updates(cls, rule: AggregationRule, reference: Mapping[str, np.ndarray]) -> Collector:
        """A combiner's side of ``rule``: client updates in, one partial out."""
        fold = rule.fold(reference) if rule.streaming else None
        return cls(
            specs_of(reference),
            fold,
            lambda updates, weights: rule.aggregate(updates, weights, reference),
        )

    @classmethod
    def for_partials(cls, rule: AggregationRule, reference: Mapping[str, np.ndarray]) -> Collector:
        """The reducer's side of ``rule``: combiner partials in, the merged model out."""
        fold = rule.partial_fold(reference) if rule.streaming else None
        return cls(
            specs_of(reference),
            fold,
            lambda partials, weights: rule.merge(partials, weights, reference),
        )

    def add(self, staged: Path, weight: float) -> None:
        """Check ``staged`` and fold it (deleting it) or keep it in the spool.

        Its layout was checked where it arrived; here its values are (NaN, Inf). Raises
        `UpdateRejected` with nothing collected changed.
        """
        started = time.perf_counter()
        update = MappedModelFile(staged)
        check_finite(update, self._specs)
        if self._fold is not None:
            self._fold.add(update, weight)
            staged.unlink(missing_ok=True)
        else:
            self._spooled.append((staged, weight))
        self.count += 1
        self.bytes_in += total_bytes(self._specs)
        self.seconds += time.perf_counter() - started

    def result(self) -> tuple[Params, float]:
        if self.count == 0:
            raise ConfigError("nothing was collected; a rule over no updates is undefined")
        started = time.perf_counter()
        try:
            if self._fold is not None:
                return self._fold.result()
            inputs = [MappedModelFile(path) for path, _ in self._spooled]
            return self._combine(inputs, [weight for _, weight in self._spooled])
        finally:
            self.seconds += time.perf_counter() - started

    def discard(self) -> None:
        """Delete whatever is spooled (after the result is taken, or when a round is dropped)."""
        for path, _ in self._spooled:
            path.unlink(missing_ok=True)
        self._spooled.clear()
