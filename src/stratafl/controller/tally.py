"""Tallies of a round: how the quota splits, whether a partial's weight is believable, and
what the clients' scores add up to. Plain functions of values, tested directly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from stratafl.aggregate.scores import scores_problem
from stratafl.aggregate.weights import median_low
from stratafl.controller.link import CombinerAnswer
from stratafl.errors import UpdateRejected
from stratafl.records import ClientOutcome, Validation
from stratafl.settings import WEIGHT_CAP_RATIO
from stratafl.status import OutcomeStatus

MAX_WEIGHT_RATIO = WEIGHT_CAP_RATIO
"""No client's validation weight counts for more than this many times the lower median's:
the bound training weights have by default (`stratafl.settings.WEIGHT_CAP_RATIO`)."""


def split_quota(total: int, loads: dict[str, int]) -> dict[str, int]:
    """Split ``total`` over combiners in proportion to their clients (largest remainder)."""
    available = sum(loads.values())
    if available == 0 or total <= 0:
        return {key: 0 for key in loads}
    exact = {key: total * n / available for key, n in loads.items()}
    quota = {key: min(loads[key], math.floor(x)) for key, x in exact.items()}
    by_remainder = sorted(loads, key=lambda k: (-(exact[k] - quota[k]), k))
    for key in by_remainder:
        if sum(quota.values()) >= total:
            break
        if quota[key] < loads[key]:
            quota[key] += 1
    return quota


def summarize_validation(outcomes: Sequence[ClientOutcome]) -> Validation:
    """Per-client metrics and their mean, weighted by each client's validation examples.

    Each client reports its own weight, so no client may dictate the mean: a weight is
    at least 1 and at most `MAX_WEIGHT_RATIO` times the lower median weight (a weight some
    honest client reported while fewer than half are hostile; the plain median of two
    reports is half the hostile one), and a metric is averaged when more than half of the
    clients report it (over those that do), so one client can neither drop a metric nor
    make it infinite. A report with a score out of its kind's range (a rate outside [0, 1],
    a negative loss: `stratafl.aggregate.scores`) is left out, whatever its combiner let by.
    """
    per_client = {
        o.client_id: o.metrics
        for o in outcomes
        if o.status == OutcomeStatus.OK and not scores_problem(o.metrics)
    }
    if not per_client:
        return Validation()
    claimed = {c: float(m.get("num_examples", 1.0)) for c, m in per_client.items()}
    finite = [w for w in claimed.values() if math.isfinite(w)]
    cap = MAX_WEIGHT_RATIO * max(1.0, median_low(finite) if finite else 1.0)
    weights = {c: min(max(w, 1.0), cap) if math.isfinite(w) else 1.0 for c, w in claimed.items()}
    reported = Counter(name for metrics in per_client.values() for name in metrics)
    means: dict[str, float] = {}
    for name in sorted(n for n, count in reported.items() if 2 * count > len(per_client)):
        if name == "num_examples":
            continue
        clients = [c for c in per_client if name in per_client[c]]
        mean = sum(per_client[c][name] * weights[c] for c in clients) / sum(
            weights[c] for c in clients
        )
        if math.isfinite(mean):
            means[name] = mean
    return Validation(clients=len(per_client), per_client=per_client, **means)


def check_partial(answer: CombinerAnswer, *, partial_updates: bool = False) -> None:
    """Raise `UpdateRejected` unless a partial's weight is backed by the updates it reports.

    A combiner's partial counts in the merge by its weight; a lying combiner could claim
    any. Every rule's weight is at most the sum of the accepted updates' example counts
    (FedAvg: exactly that; count-weighted rules: the number of updates), and its
    contributor count is the number of outcomes it reports as ok. Per-tensor weights come
    only in a session with ``partial_updates``, each in (0, total weight].
    """
    accepted = [o for o in answer.outcomes if o.status == OutcomeStatus.OK]
    examples = sum(o.num_examples for o in accepted)
    if answer.contributors != len(accepted):
        raise UpdateRejected(
            f"combiner {answer.combiner_id} claims {answer.contributors} contributors but "
            f"reports {len(accepted)} accepted updates"
        )
    if not (0 < answer.total_weight <= examples):
        raise UpdateRejected(
            f"combiner {answer.combiner_id} weights its partial {answer.total_weight:g}, "
            f"more than the {examples} examples behind its accepted updates"
        )
    if answer.tensor_weights and not partial_updates:
        raise UpdateRejected(
            f"combiner {answer.combiner_id} weighs its partial per tensor, but this session "
            "takes full updates (partial_updates 'none')"
        )
    for name, weight in answer.tensor_weights.items():
        if not (0 < weight <= answer.total_weight):
            raise UpdateRejected(
                f"combiner {answer.combiner_id} weighs tensor {name[:128]!r} {weight:g}, "
                f"outside (0, {answer.total_weight:g}], its partial's total weight"
            )
