"""Weight caps: the one capping rule, the collector that applies it, the controller's cap
from verified counts, and the session setting that turns it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate import FedAvg, Median
from stratafl.aggregate.mean import weighted_mean
from stratafl.aggregate.weights import capped_weights, median_low, round_cap
from stratafl.collect.collector import Collector
from stratafl.controller.caps import next_weight_cap, verified_counts
from stratafl.modelfile.codec import save_params
from stratafl.records import ClientOutcome
from stratafl.settings import MAX_EXAMPLES, WEIGHT_CAP_RATIO, SessionConfig
from stratafl.status import OutcomeStatus

CLAIMS = st.lists(st.integers(1, 10**12), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(claims=CLAIMS, ratio=st.floats(1.0, 10.0))
def test_a_median_capped_weight_is_its_claim_clamped_to_ratio_lower_medians(claims, ratio):
    weights = capped_weights(claims, weight_cap=0, median_cap_ratio=ratio)
    cap = ratio * median_low([float(c) for c in claims])
    assert len(weights) == len(claims)
    for claim, weight in zip(claims, weights, strict=True):
        assert weight == min(float(claim), cap)
    # every claim at or under the lower median counts in full
    assert all(w == c for c, w in zip(claims, weights, strict=True) if c <= median_low(claims))


@settings(max_examples=200, deadline=None)
@given(
    honest=st.lists(st.integers(1, 1000), min_size=2, max_size=12),
    hostile=st.integers(1, 10**15),
    ratio=st.floats(1.0, 5.0),
)
def test_one_hostile_claim_weighs_at_most_ratio_honest_medians(honest, hostile, ratio):
    """With at least two honest claims, the lower median is at most the largest honest
    claim, so a hostile claim's weight is bounded by the honest claims alone."""
    weights = capped_weights([*honest, hostile], weight_cap=0, median_cap_ratio=ratio)
    assert weights[-1] <= ratio * max(honest)
    assert weights[-1] <= ratio * sorted(honest)[len(honest) // 2]


@given(claims=CLAIMS, cap=st.integers(1, 10**6))
def test_a_fixed_cap_wins_over_the_ratio(claims, cap):
    assert capped_weights(claims, weight_cap=cap, median_cap_ratio=3.0) == [
        float(min(c, cap)) for c in claims
    ]
    assert round_cap(claims, weight_cap=0, median_cap_ratio=0.0) == float("inf")


def _staged(tmp_path: Path, params, name: str) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_params(path, params)
    return path


def _updates(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        {
            "w": rng.normal(size=(4, 3)).astype(np.float32),
            "b": rng.normal(size=3).astype(np.float32),
        }
        for _ in range(count)
    ]


@pytest.mark.parametrize(("weight_cap", "ratio"), [(0, 3.0), (25, 0.0), (25, 3.0), (0, 0.0)])
def test_the_collector_folds_fedavg_with_capped_weights(tmp_path, weight_cap, ratio):
    claims = [10, 20, 10**9, 30]
    updates = _updates(len(claims))
    reference = {name: np.zeros_like(a) for name, a in updates[0].items()}
    collector = Collector.for_updates(
        FedAvg(), reference, weight_cap=weight_cap, median_cap_ratio=ratio
    )
    for index, (update, claim) in enumerate(zip(updates, claims, strict=True)):
        collector.add(_staged(tmp_path, update, f"u{index}"), float(claim), key=f"t{index}")
    params, total = collector.result()
    collector.discard()
    weights = capped_weights(claims, weight_cap=weight_cap, median_cap_ratio=ratio)
    assert total == sum(weights)
    expected = weighted_mean(updates, weights)
    for name in expected:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-6, atol=1e-6)
    assert list(tmp_path.iterdir()) == []  # nothing spooled outlives the round


def test_a_median_cap_holds_the_updates_until_the_round_ends(tmp_path):
    updates = _updates(2)
    reference = {name: np.zeros_like(a) for name, a in updates[0].items()}
    collector = Collector.for_updates(FedAvg(), reference, median_cap_ratio=3.0)
    collector.add(_staged(tmp_path, updates[0], "a"), 10.0)
    collector.add(_staged(tmp_path, updates[1], "b"), 10.0**9)
    assert len(list(tmp_path.iterdir())) == 2  # spooled: the cap needs every claim
    _, total = collector.result()
    assert total == 10.0 + 30.0  # min(1e9, 3 * lower median 10)
    collector.discard()


def test_a_rule_that_weighs_by_count_ignores_the_cap(tmp_path):
    updates = _updates(3)
    reference = {name: np.zeros_like(a) for name, a in updates[0].items()}
    results = []
    for ratio in (0.0, 3.0):
        collector = Collector.for_updates(Median(), reference, median_cap_ratio=ratio)
        for index, update in enumerate(updates):
            collector.add(_staged(tmp_path, update, f"{ratio}-{index}"), 10.0 ** (index * 4))
        results.append(collector.result()[0])
        collector.discard()
    for name in results[0]:
        np.testing.assert_array_equal(results[0][name], results[1][name])


def _outcome(client: str, examples: int, status=OutcomeStatus.OK) -> ClientOutcome:
    return ClientOutcome(client_id=client, status=status, num_examples=examples)


def test_the_next_rounds_cap_is_ratio_times_the_lower_median_of_verified_counts():
    outcomes = [
        _outcome("a", 10),
        _outcome("b", 20),
        _outcome("c", 30),
        _outcome("d", 40),
        _outcome("e", 10**9, OutcomeStatus.REJECTED),  # refused: not verified
    ]
    assert verified_counts(outcomes) == [10, 20, 30, 40]
    assert next_weight_cap(outcomes, 3.0) == 60
    assert next_weight_cap(outcomes, 2.5) == 50
    assert next_weight_cap(outcomes, 0.0) == 0  # the cap is off
    assert next_weight_cap([], 3.0) == 0  # no history: each combiner caps by its claims
    assert next_weight_cap([_outcome("a", MAX_EXAMPLES)], 1e6) == MAX_EXAMPLES
    assert next_weight_cap([_outcome("a", 1)], 0.1) == 1


@given(
    honest=st.lists(st.integers(1, 10**6), min_size=3, max_size=15),
    hostile=st.lists(st.integers(1, 2**53), max_size=1),
)
def test_a_minority_of_verified_claims_cannot_raise_the_cap_past_the_honest_counts(honest, hostile):
    outcomes = [_outcome(f"h{i}", n) for i, n in enumerate(honest)]
    outcomes += [_outcome(f"x{i}", n) for i, n in enumerate(hostile)]
    assert next_weight_cap(outcomes, 3.0) <= 3 * max(honest) + 1


def test_caps_are_on_by_default_and_a_session_may_turn_them_off():
    default = SessionConfig()
    assert default.weight_cap_ratio == WEIGHT_CAP_RATIO
    first = default.round_settings()
    assert (first.weight_cap, first.median_cap_ratio) == (0, WEIGHT_CAP_RATIO)
    later = default.round_settings(weight_cap=60)
    assert (later.weight_cap, later.median_cap_ratio) == (60, WEIGHT_CAP_RATIO)
    off = SessionConfig(weight_cap_ratio=0).round_settings(weight_cap=60)
    assert (off.weight_cap, off.median_cap_ratio) == (0, 0.0)
    assert off.max_examples_per_client == default.max_examples_per_client  # still refused
