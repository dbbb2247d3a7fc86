"""Tallies of a round: who takes part, how the quota splits, which outcomes count, whether
a partial's weight is believable, and what the clients' scores add up to. Plain functions
of values, tested directly.

The controller picks each round's clients itself (`select_clients`, from the clients it
assigned to each combiner), and counts an outcome only if the client was picked on that
combiner and signed a receipt for exactly what the combiner reports (`verify_outcomes`):
a combiner relays, it cannot make a participant, an example count or a score. An honest
combiner has already checked each receipt with the client's public key (sent in the
round's spec) and folded no update whose receipt fails, so its partial never holds an
unverified update; the controller checks again because a hostile combiner may lie.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

from stratafl.aggregate.scores import scores_problem
from stratafl.aggregate.weights import capped_weights, median_low
from stratafl.controller.link import CombinerAnswer
from stratafl.errors import UpdateRejected
from stratafl.records import ClientOutcome, Validation
from stratafl.security.receipts import ReceiptKeys, Statement
from stratafl.settings import WEIGHT_CAP_RATIO
from stratafl.status import OutcomeStatus, TaskKind

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


def select_clients(
    eligible: Mapping[str, Collection[str]], quotas: Mapping[str, int], seed: int
) -> dict[str, list[str]]:
    """The clients each combiner in ``quotas`` runs the round on: ``quota`` of its
    ``eligible`` clients (all of them when the quota is as large), drawn reproducibly from
    ``seed`` (combiners in id order, clients in id order before the draw)."""
    rng = random.Random(seed)
    chosen: dict[str, list[str]] = {}
    for combiner_id in sorted(quotas):
        ids = sorted(eligible.get(combiner_id, ()))
        quota = quotas[combiner_id]
        chosen[combiner_id] = sorted(rng.sample(ids, quota)) if quota < len(ids) else ids
    return chosen


def verify_outcomes(
    answer: CombinerAnswer,
    *,
    selected: Collection[str],
    round_id: str,
    kind: TaskKind,
    keys: ReceiptKeys,
    counted: set[str],
) -> None:
    """Keep an ok outcome of ``answer`` ok only if its client was ``selected`` on that
    combiner, is not in ``counted`` (each client counts once per round, federation-wide)
    and its receipt verifies over what the combiner reports; otherwise rewrite it, in
    place, as rejected with a reason that names the combiner. Adds the counted clients.
    An honest combiner rejected bad receipts before folding, so a rewrite here means a
    combiner that lies (and `check_partial` then refuses its partial)."""
    for index, outcome in enumerate(answer.outcomes):
        if outcome.status != OutcomeStatus.OK:
            continue
        receipt = answer.receipts[index] if index < len(answer.receipts) else b""
        problem = _problem(answer.combiner_id, outcome, receipt, selected, counted)
        if problem is None:
            statement = Statement(
                round_id,
                str(kind),
                outcome.client_id,
                answer.combiner_id,
                outcome.num_examples,
                outcome.metrics,
            )
            if not keys.verify(statement, receipt):
                problem = (
                    f"combiner {answer.combiner_id} reported client {outcome.client_id[:128]} "
                    "without a valid receipt"
                )
        if problem is None:
            counted.add(outcome.client_id)
        else:
            update = {"status": OutcomeStatus.REJECTED, "reason": problem}
            answer.outcomes[index] = outcome.model_copy(update=update)


def _problem(
    combiner_id: str,
    outcome: ClientOutcome,
    receipt: bytes,
    selected: Collection[str],
    counted: set[str],
) -> str | None:
    client = outcome.client_id[:128]
    if outcome.client_id not in selected:
        return (
            f"combiner {combiner_id} reported client {client}, which the controller did not "
            "select there this round"
        )
    if outcome.client_id in counted:
        return f"combiner {combiner_id} reported client {client}, counted already this round"
    if not receipt:
        return f"combiner {combiner_id} reported client {client} without a valid receipt"
    return None


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


def check_partial(
    answer: CombinerAnswer,
    *,
    partial_updates: bool = False,
    weight_cap: int = 0,
    median_cap_ratio: float = 0.0,
) -> None:
    """Raise `UpdateRejected` unless a partial's weight is backed by verified updates.

    A combiner's partial counts in the merge by its weight; a lying combiner could claim
    any. Its ok outcomes are the verified ones (`verify_outcomes` ran first): its
    contributor count must be their number, and every rule's weight is at most the sum of
    their example counts, each capped as the combiner caps it (`capped_weights`; FedAvg:
    exactly that sum; count-weighted rules: the number of updates). Per-tensor weights
    come only in a session with ``partial_updates``, each in (0, total weight]. An honest
    combiner folds only updates whose receipts it verified, so only a lying combiner
    fails here, never because of one hostile client.
    """
    accepted = [o for o in answer.outcomes if o.status == OutcomeStatus.OK]
    claims = [o.num_examples for o in accepted]
    weights = capped_weights(claims, weight_cap=weight_cap, median_cap_ratio=median_cap_ratio)
    backed = math.fsum(weights) * (1 + 1e-9)  # the combiner may add them in another order
    if answer.contributors != len(accepted):
        raise UpdateRejected(
            f"combiner {answer.combiner_id} claims {answer.contributors} contributors but "
            f"reports {len(accepted)} verified updates"
        )
    if not (0 < answer.total_weight <= backed):
        raise UpdateRejected(
            f"combiner {answer.combiner_id} weights its partial {answer.total_weight:g}, "
            f"more than the {math.fsum(weights):g} examples behind its verified updates"
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
