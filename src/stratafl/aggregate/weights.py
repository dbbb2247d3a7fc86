"""How much an update counts: its claimed example count, capped so no client owns the mean.

A client says how many examples it trained on, and FedAvg weighs its update by that
number; nobody can check it. So each claim counts at most up to a cap (a larger claim is
clamped, not refused: an honest site with much data still takes part). The cap comes from
one of two places, and the combiner that folds and the controller that checks the
combiner's total apply the same function to the same numbers:

- ``weight_cap``: a number the controller set for the round from what it verified in
  earlier rounds (`stratafl.controller.caps`);
- ``median_cap_ratio``: with no such number (a session's first round), the ratio times the
  lower median of the round's own claims at that combiner. The lower median is a claim
  some honest client made as long as fewer than half the claims are hostile, so one
  hostile claim counts for at most ``ratio`` honest medians.
"""

from __future__ import annotations

from collections.abc import Sequence


def median_low(values: Sequence[float]) -> float:
    """The lower median: an element of ``values`` (never an average of two)."""
    if not values:
        raise ValueError("the median of no values is undefined")
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def round_cap(claims: Sequence[float], *, weight_cap: int, median_cap_ratio: float) -> float:
    """The largest weight any of ``claims`` counts with this round (``inf``: no cap)."""
    if weight_cap > 0:
        return float(weight_cap)
    if median_cap_ratio > 0 and claims:
        return median_cap_ratio * median_low([float(c) for c in claims])
    return float("inf")


def capped_weights(
    claims: Sequence[float], *, weight_cap: int, median_cap_ratio: float
) -> list[float]:
    """Each claim's weight: the claim, clamped to the round's cap (`round_cap`)."""
    cap = round_cap(claims, weight_cap=weight_cap, median_cap_ratio=median_cap_ratio)
    return [min(float(c), cap) for c in claims]
