"""SCAFFOLD's maths (stratafl.aggregate.scaffold): the client's option II, what it sends, and
that plain FedAvg of those updates is the server's SCAFFOLD step, over one combiner or many.

The references are the paper's formulas written out in float64 here, not the module's code.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate.fedavg import FedAvg
from stratafl.aggregate.scaffold import (
    CONTROL_PREFIX,
    client_update,
    control_name,
    local_correction,
    split_control,
    updated_client_control,
    with_zero_control,
)
from stratafl.aggregate.server_state import SCAFFOLD_PREFIX, model_part, state_prefixes
from stratafl.errors import ConfigError, ModelFormatError
from tests.support.hierarchy import flat_and_merged

SHAPES = {"fc1.weight": (3, 4), "fc1.bias": (3,)}


def _arrays(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {name: (rng.normal(size=s) * scale).astype(np.float32) for name, s in SHAPES.items()}


def _global(x: dict[str, np.ndarray], c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**x, **{control_name(name): value for name, value in c.items()}}


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _wmean(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return sum(w * _f64(a) for a, w in zip(arrays, weights, strict=True)) / sum(weights)


def _client_round(rng, x, c, c_i, steps, lr, fraction):
    """One client: a trained y_i (random: the maths holds for any), option II, the update."""
    y = {
        name: (_f64(v) + rng.normal(size=v.shape) * 0.1).astype(np.float32) for name, v in x.items()
    }
    c_new = updated_client_control(c_i, c, x, y, steps=steps, lr=lr)
    return y, c_new, client_update(_global(x, c), y, c_i, c_new, fraction)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 500),
    lr=st.floats(1e-3, 1.0),
)
def test_option_two_is_the_papers_formula(seed, steps, lr):
    rng = np.random.default_rng(seed)
    x, y, c, c_i = _arrays(rng), _arrays(rng), _arrays(rng), _arrays(rng)
    got = updated_client_control(c_i, c, x, y, steps=steps, lr=lr)
    for name in SHAPES:
        want = _f64(c_i[name]) - _f64(c[name]) + (_f64(x[name]) - _f64(y[name])) / (steps * lr)
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 50), lr=st.floats(0.01, 0.5))
def test_with_full_participation_a_client_sends_its_mean_corrected_gradient(seed, steps, lr):
    """c + (c_i+ - c_i) = (x - y_i) / (K lr): the mean of the K corrected local steps."""
    rng = np.random.default_rng(seed)
    x, c, c_i = _arrays(rng), _arrays(rng), _arrays(rng)
    y, _, sent = _client_round(rng, x, c, c_i, steps, lr, 1.0)
    for name in SHAPES:
        np.testing.assert_array_equal(sent[name], y[name])
        want = (_f64(x[name]) - _f64(y[name])) / (steps * lr)
        np.testing.assert_allclose(sent[control_name(name)], want, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    weights=st.lists(st.integers(1, 1000), min_size=1, max_size=8),
    rounds=st.integers(1, 3),
)
def test_under_full_participation_c_stays_the_weighted_mean_of_the_clients_c_i(
    seed, weights, rounds
):
    rng = np.random.default_rng(seed)
    x = _arrays(rng)
    c_is = [_arrays(rng) for _ in weights]
    c = {name: _wmean([ci[name] for ci in c_is], weights).astype(np.float32) for name in SHAPES}
    for _ in range(rounds):
        sent, new_c_is = [], []
        for c_i in c_is:
            _, c_new, update = _client_round(rng, x, c, c_i, steps=5, lr=0.1, fraction=1.0)
            sent.append(update)
            new_c_is.append(c_new)
        merged, _ = FedAvg().aggregate(sent, weights, _global(x, c))
        x, c = split_control(merged)
        c_is = new_c_is
        for name in SHAPES:
            want = _wmean([ci[name] for ci in c_is], weights)
            np.testing.assert_allclose(c[name], want, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    groups=st.lists(st.lists(st.integers(1, 1000), min_size=1, max_size=4), min_size=2, max_size=4),
    fraction=st.floats(0.05, 1.0),
)
def test_fedavg_over_combiners_is_exactly_the_flat_scaffold_step(seed, groups, fraction):
    """x+ = wmean(y_i) and c+ = c + f * wmean(c_i+ - c_i), whether one reducer folds all the
    updates or each combiner folds its own and the reducer merges the partials."""
    rng = np.random.default_rng(seed)
    x, c = _arrays(rng), _arrays(rng)
    reference = _global(x, c)
    weights = [w for group in groups for w in group]
    ys, deltas, updates = [], [], []
    for _ in weights:
        c_i = _arrays(rng)
        y, c_new, update = _client_round(rng, x, c, c_i, steps=7, lr=0.05, fraction=fraction)
        ys.append(y)
        deltas.append({n: _f64(c_new[n]) - _f64(c_i[n]) for n in SHAPES})
        updates.append(update)
    flat, merged = flat_and_merged(FedAvg(), updates, groups, reference)
    for name in SHAPES:
        want_x = _wmean([y[name] for y in ys], weights)
        want_c = _f64(c[name]) + fraction * _wmean([d[name] for d in deltas], weights)
        for result in (flat, merged):
            np.testing.assert_allclose(result[name], want_x, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(result[control_name(name)], want_c, rtol=1e-4, atol=1e-4)
        # the hierarchy adds at most one float32 rounding of each partial
        np.testing.assert_allclose(
            merged[control_name(name)], flat[control_name(name)], rtol=1e-6, atol=1e-6
        )


def test_zero_control_variates_cover_the_float_tensors_only_and_split_back():
    params = {"w": np.ones((2, 2), np.float32), "steps": np.array([3], np.int64)}
    start = with_zero_control(params)
    assert list(start) == ["w", "steps", control_name("w")]
    np.testing.assert_array_equal(start[control_name("w")], np.zeros((2, 2), np.float32))
    assert state_prefixes(start) == {SCAFFOLD_PREFIX} and not state_prefixes(params)
    model, c = split_control(start)
    assert list(model) == ["w", "steps"] and list(c) == ["w"]
    assert model_part(start) == model and model_part(params) == params
    moved = {**start, control_name("w"): np.ones((2, 2), np.float32)}
    np.testing.assert_array_equal(with_zero_control(moved)[control_name("w")], 0)


def test_a_model_without_control_variates_is_refused_with_the_setting_to_use():
    with pytest.raises(ConfigError, match="drift_correction='scaffold'"):
        split_control({"w": np.ones(2, np.float32)})
    with pytest.raises(ModelFormatError):  # a control variate of another shape
        split_control({"w": np.ones(2, np.float32), CONTROL_PREFIX + "w": np.ones(3, np.float32)})


def test_integer_tensors_travel_as_trained_and_get_no_control_variate():
    x = {"w": np.zeros(2, np.float32), "n": np.array([1], np.int64)}
    start = with_zero_control(x)
    trained = {"w": np.array([-0.2, 0.4], np.float32), "n": np.array([2], np.int64)}
    c_i = {"w": np.zeros(2, np.float32)}
    c_new = updated_client_control(
        c_i, {"w": start[control_name("w")]}, x, trained, steps=2, lr=0.1
    )
    sent = client_update(start, trained, c_i, c_new, 0.5)
    assert list(sent) == list(start)  # the global model's order: codecs compare layouts
    np.testing.assert_array_equal(sent["n"], [2])
    np.testing.assert_allclose(sent[control_name("w")], 0.5 * np.array([1.0, -2.0]), rtol=1e-6)


def test_correction_is_c_minus_c_i():
    c = {"w": np.array([1.0, 2.0], np.float32)}
    c_i = {"w": np.array([0.5, -1.0], np.float32)}
    np.testing.assert_array_equal(local_correction(c, c_i)["w"], [0.5, 3.0])


@pytest.mark.parametrize(
    ("steps", "lr", "fraction", "message"),
    [(0, 0.1, 1.0, "K >= 1"), (1, 0.0, 1.0, "lr > 0"), (1, 0.1, 0.0, r"\(0, 1\]")],
)
def test_bad_step_counts_rates_and_fractions_are_refused(steps, lr, fraction, message):
    x = {"w": np.zeros(2, np.float32)}
    c = {"w": np.zeros(2, np.float32)}
    with pytest.raises(ConfigError, match=message):
        c_new = updated_client_control(c, c, x, x, steps=steps, lr=lr)
        client_update(_global(x, c), x, c, c_new, fraction)
