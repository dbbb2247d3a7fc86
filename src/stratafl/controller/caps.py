"""The weight cap of a session's next round, from the example counts the controller verified.

A claimed example count is a client's word; FedAvg weighs its update by it. From a
session's second round on, the controller caps every update's weight at ``ratio`` times
the lower median of the counts it verified in the previous training round (the round
record's ok outcomes: with client receipts, counts the clients signed for updates that
counted). The lower median is a count some honest client gave as long as fewer than half
of them are hostile, so a hostile claim weighs at most ``ratio`` honest medians. With no
such history (round 1, or a round after one with no ok outcome) the cap is left to each
combiner: ``ratio`` times the lower median of its round's own claims (`RoundSettings`).
Pure functions of records, tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from stratafl.aggregate.weights import median_low
from stratafl.records import ClientOutcome
from stratafl.settings import MAX_EXAMPLES
from stratafl.status import OutcomeStatus


def verified_counts(outcomes: Sequence[ClientOutcome]) -> list[int]:
    """The example counts behind a training round's accepted updates (its ok outcomes)."""
    return [o.num_examples for o in outcomes if o.status == OutcomeStatus.OK and o.num_examples > 0]


def next_weight_cap(outcomes: Sequence[ClientOutcome], ratio: float) -> int:
    """The ``weight_cap`` of the round after one with ``outcomes``: ``ratio`` times the lower
    median of its verified counts, rounded up, at least 1 and at most `MAX_EXAMPLES`; 0
    (no fixed cap: each combiner caps by its own claims) without a ratio or any count."""
    counts = verified_counts(outcomes)
    if ratio <= 0 or not counts:
        return 0
    return max(1, min(MAX_EXAMPLES, math.ceil(ratio * median_low(counts))))
