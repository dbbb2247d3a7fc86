"""The reducer's check of combiner partials against each other.

A combiner holds its clients' updates in the clear and sends one partial: a hostile
combiner can send any content it likes, and the controller cannot recompute it. What the
reducer can do is compare the partials: honest combiners aggregate clients of the same
federation from the same global model, so their partials lie near each other, and a
partial far from the rest is refused. The measure:

- the partials' coordinate-wise median m (an honest value in every coordinate while
  fewer than half of the partials are hostile);
- each partial's Euclidean distance d_i to m;
- the scale s, the median of the d_i;
- a partial with d_i > ratio * s is refused (when s is 0, more than half of the partials
  coincide, and any partial away from them is refused).

With fewer than `MIN_PARTIALS` partials no median separates an honest partial from a
hostile one, so the check refuses nothing: it cannot decide. What it leaves possible: a
hostile partial within ``ratio`` times the typical distance counts, and a hostile
combiner that sends a copy of another partial can, with three partials, make the third
(honest) one look far (a denial of those clients, not a poisoning). The distances read
the partials block by block (`stratafl.aggregate.blocks`): memory O(partials x block).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from stratafl.aggregate.blocks import coordinate_blocks, stack_block
from stratafl.params import TensorSpec

MIN_PARTIALS = 3
"""The fewest partials the check can decide over."""
_TOLERANCE = 1e-9
"""Distances within this fraction of the median's norm are float noise, never refused."""


def median_distances(
    partials: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec]
) -> tuple[list[float], float]:
    """Each partial's Euclidean distance to the partials' coordinate-wise median over the
    tensors ``specs``, and the norm of that median."""
    squares = np.zeros(len(partials), dtype=np.float64)
    median_square = 0.0
    for spec in specs:
        for block in coordinate_blocks(spec.size, len(partials)):
            rows = stack_block(partials, spec.name, block)
            median = np.median(rows, axis=0)
            squares += np.square(rows - median).sum(axis=1)
            median_square += float(np.square(median).sum())
    return [math.sqrt(s) for s in squares], math.sqrt(median_square)


def outlying_partials(
    partials: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec], ratio: float
) -> dict[int, str]:
    """The partials to refuse (index -> why, in one line): those farther from the
    coordinate-wise median than ``ratio`` times the median distance. None with
    ``ratio`` 0 (the check is off) or fewer than `MIN_PARTIALS` partials."""
    if ratio <= 0 or len(partials) < MIN_PARTIALS:
        return {}
    distances, norm = median_distances(partials, specs)
    scale = float(np.median(distances))
    limit = max(ratio * scale, _TOLERANCE * (1.0 + norm))
    return {
        index: (
            f"its distance {distance:.6g} from the {len(partials)} partials' coordinate-wise "
            f"median is over {ratio:g} times their median distance {scale:.6g}"
        )
        for index, distance in enumerate(distances)
        if distance > limit
    }
