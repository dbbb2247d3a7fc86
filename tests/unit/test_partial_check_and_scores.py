"""The reducer's check of partials against each other, and scores bounded by their kind."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate import blocks
from stratafl.aggregate.partial_check import MIN_PARTIALS, median_distances, outlying_partials
from stratafl.aggregate.scores import score_problem, scores_problem
from stratafl.controller.tally import summarize_validation
from stratafl.params import specs_of
from stratafl.records import ClientOutcome
from stratafl.status import OutcomeStatus

SHAPES = {"w": (6, 5), "b": (5,)}


def _partials(seed: int, count: int, spread: float):
    """``count`` honest partials: one model plus noise of size ``spread``."""
    rng = np.random.default_rng(seed)
    centre = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    return [
        {
            name: (value + spread * rng.uniform(-1, 1, size=value.shape)).astype(np.float32)
            for name, value in centre.items()
        }
        for _ in range(count)
    ]


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    honest=st.integers(MIN_PARTIALS - 1, 8),
    offset=st.floats(50.0, 1e6),
)
def test_a_partial_far_from_the_honest_ones_is_refused_and_no_honest_one_is(seed, honest, offset):
    partials = _partials(seed, honest, spread=0.1)
    altered = {name: value + np.float32(offset) for name, value in partials[0].items()}
    everyone = [*partials, altered]
    specs = specs_of(partials[0])
    refused = outlying_partials(everyone, specs, ratio=4.0)
    assert set(refused) == {len(everyone) - 1}
    assert "median distance" in refused[len(everyone) - 1]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(0, MIN_PARTIALS - 1))
def test_with_fewer_than_three_partials_the_check_cannot_decide(seed, count):
    partials = _partials(seed, count, spread=1.0)
    if partials:
        partials[-1] = {name: value * 1e6 for name, value in partials[-1].items()}
    assert outlying_partials(partials, [*specs_of(_partials(0, 1, 0)[0])], ratio=4.0) == {}


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(3, 7), permutation_seed=st.integers(0, 99))
def test_the_verdict_depends_on_the_partials_not_their_order(seed, count, permutation_seed):
    partials = _partials(seed, count, spread=1.0)
    partials.append({name: value + np.float32(5) for name, value in partials[0].items()})
    specs = specs_of(partials[0])
    order = np.random.default_rng(permutation_seed).permutation(len(partials))
    first = outlying_partials(partials, specs, ratio=2.0)
    shuffled = outlying_partials([partials[i] for i in order], specs, ratio=2.0)
    assert {int(order[i]) for i in shuffled} == set(first)


def test_the_check_is_off_at_ratio_zero_and_silent_on_identical_partials():
    partials = _partials(1, 4, spread=0.0)
    specs = specs_of(partials[0])
    assert outlying_partials(partials, specs, ratio=4.0) == {}
    partials.append({name: value + np.float32(100) for name, value in partials[0].items()})
    assert outlying_partials(partials, specs, ratio=0.0) == {}
    assert set(outlying_partials(partials, specs, ratio=4.0)) == {4}


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(3, 6), block=st.integers(1, 64))
def test_blockwise_distances_equal_direct_ones(seed, count, block):
    partials = _partials(seed, count, spread=1.0)
    specs = specs_of(partials[0])
    old = blocks.BLOCK_ELEMENTS
    blocks.BLOCK_ELEMENTS = block
    try:
        distances, _ = median_distances(partials, specs)
    finally:
        blocks.BLOCK_ELEMENTS = old
    flat = np.stack([np.concatenate([p[s.name].ravel() for s in specs]) for p in partials])
    flat = flat.astype(np.float64)
    direct = np.linalg.norm(flat - np.median(flat, axis=0), axis=1)
    np.testing.assert_allclose(distances, direct, rtol=1e-9, atol=1e-9)


# -- scores ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    [
        ("accuracy", 1e12, True),
        ("accuracy", -0.1, True),
        ("accuracy", 1.0, False),
        ("val_acc", 0.0, False),
        ("val_acc", 1.5, True),
        ("f1_macro", 2.0, True),
        ("roc_auc", 0.7, False),
        ("test-precision", 1.01, True),
        ("recall", 0.5, False),
        ("loss", -1.0, True),
        ("train_loss", 12.5, False),
        ("val_mse", -0.5, True),
        ("shift", -3.0, False),  # no known kind: only the magnitude bound applies
        ("num_examples", 1e9, False),
        ("accumulated", 5.0, False),  # a word, not "acc"
    ],
)
def test_a_score_lies_in_its_kinds_range(name, value, refused):
    assert bool(score_problem(name, value)) is refused
    assert bool(scores_problem({"fine": 0.0, name: value})) is refused


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_a_rate_is_refused_exactly_outside_zero_to_one(value):
    assert bool(score_problem("accuracy", value)) is not (0.0 <= value <= 1.0)
    assert "\n" not in score_problem("accuracy", value)


def _report(client: str, metrics: dict[str, float]) -> ClientOutcome:
    return ClientOutcome(client_id=client, status=OutcomeStatus.OK, metrics=metrics)


def test_a_hostile_weight_among_few_clients_counts_at_most_three_lower_medians():
    honest = _report("a", {"accuracy": 0.5, "num_examples": 10})
    hostile = _report("x", {"accuracy": 1.0, "num_examples": 1e12})
    validation = summarize_validation([honest, hostile])
    # lower median 10, cap 30: (0.5 * 10 + 1.0 * 30) / 40; the plain median (5e11) would
    # have let the hostile weight through whole
    assert validation.mean("accuracy") == pytest.approx(35 / 40)


def test_a_report_out_of_its_kinds_range_is_left_out_of_the_rounds_scores():
    reports = [
        _report("a", {"accuracy": 0.5, "num_examples": 10}),
        _report("b", {"accuracy": 0.7, "num_examples": 10}),
        _report("x", {"accuracy": 1e12, "num_examples": 10}),
    ]
    validation = summarize_validation(reports)
    assert set(validation.per_client) == {"a", "b"}
    assert validation.mean("accuracy") == pytest.approx(0.6)
