"""FedDyn (Acar et al. 2021): the server step is FedAvg's mean of what clients send, exact
across combiners; the client wrapper keeps g_i across rounds and restarts; and on clients
whose optima differ, FedDyn converges to the global optimum where FedAvg does not."""

from __future__ import annotations

import shutil
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate.fedavg import FedAvg
from stratafl.aggregate.feddyn import (
    client_update,
    local_correction,
    split_dynamic,
    state_name,
    updated_client_gradient,
)
from stratafl.aggregate.server_state import FEDDYN_PREFIX, with_zero_state
from stratafl.client.app import Config, TrainResult
from stratafl.client.drift import drift_corrected_app
from stratafl.client.feddyn import FedDynApp, feddyn_alpha
from stratafl.client.scaffold import ClientControl, CorrectedTraining
from stratafl.errors import ConfigError
from stratafl.params import Params
from stratafl.settings import SessionConfig
from tests.support.hierarchy import flat_and_merged

SHAPES = {"fc.weight": (3, 4), "fc.bias": (3,)}


def _arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {name: rng.normal(size=s).astype(np.float32) for name, s in SHAPES.items()}


def _f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def _wmean(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return sum(w * _f64(a) for a, w in zip(arrays, weights, strict=True)) / sum(weights)


def _global(x: Mapping[str, np.ndarray], h: Mapping[str, np.ndarray]) -> Params:
    return {**x, **{state_name(name): value for name, value in h.items()}}


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    groups=st.lists(st.lists(st.integers(1, 1000), min_size=1, max_size=4), min_size=1, max_size=4),
    fraction=st.floats(0.05, 1.0),
    alpha=st.sampled_from([0.001, 0.01, 0.1, 1.0]),
)
def test_fedavg_of_the_clients_updates_is_fedavgs_step_flat_or_over_combiners(
    seed, groups, fraction, alpha
):
    """h+ = h - alpha f wmean(θ_i - θ) and θ+ = wmean(θ_i) - h+/alpha (Algorithm 1), whether
    one fold takes every update or each combiner folds its own and the reducer merges."""
    rng = np.random.default_rng(seed)
    x, h = _arrays(rng), _arrays(rng)
    reference = _global(x, h)
    weights = [w for group in groups for w in group]
    trained = [_arrays(rng) for _ in weights]
    updates = [client_update(reference, t, alpha=alpha, fraction=fraction) for t in trained]
    flat, merged = flat_and_merged(FedAvg(), updates, groups, reference)
    for name in SHAPES:
        drift = _wmean([_f64(t[name]) - _f64(x[name]) for t in trained], weights)
        want_h = _f64(h[name]) - alpha * fraction * drift
        want_x = _wmean([t[name] for t in trained], weights) - want_h / alpha
        for result in (flat, merged):
            model, new_h = split_dynamic(result)
            scale = 1 + np.abs(want_x).max()
            np.testing.assert_allclose(new_h[name], want_h, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(model[name], want_x, rtol=1e-5, atol=1e-5 * scale / alpha)


def test_the_client_gradient_and_correction_are_the_papers():
    g = {"w": np.array([1.0, -2.0])}
    x, y = {"w": np.array([0.5, 0.5])}, {"w": np.array([1.5, 0.0])}
    np.testing.assert_allclose(local_correction(g)["w"], [-1.0, 2.0])
    np.testing.assert_allclose(updated_client_gradient(g, x, y, alpha=0.1)["w"], [0.9, -1.95])
    with pytest.raises(ConfigError, match="alpha"):
        updated_client_gradient(g, x, y, alpha=0.0)
    with pytest.raises(ConfigError, match="participation"):
        client_update(_global(x, g), y, alpha=0.1, fraction=1.5)
    with pytest.raises(ConfigError, match="drift_correction='feddyn'"):
        client_update(x, y, alpha=0.1, fraction=1.0)


class QuadraticApp:
    """Gradient descent to convergence on 0.5 * a * ||w - b||^2 (+ correction + proximal)."""

    def __init__(self, a: float, b: list[float], examples: int = 1) -> None:
        self.a, self.b, self.examples = a, np.array(b), examples

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(2)}

    def train(self, params: Params, config: Config) -> TrainResult:
        return self.train_corrected(params, config, {"w": np.zeros(2)}).result

    def train_corrected(
        self, params: Params, config: Config, correction: Params
    ) -> CorrectedTraining:
        mu, lr = float(config.get("proximal_mu", 0.0)), 0.5 / (self.a + 1.0)
        anchor = np.array(params["w"], dtype=np.float64)
        w = anchor.copy()
        for _ in range(2000):
            w -= lr * (self.a * (w - self.b) + correction["w"] + mu * (w - anchor))
        return CorrectedTraining(TrainResult({"w": w}, self.examples), steps=2000, lr=lr)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        assert list(params) == ["w"], "validation must see the model without h"
        return {}


CONFIG = {"drift_correction": "feddyn", "feddyn_alpha": 0.5, "participation": 1.0}


def _run(apps: list[FedDynApp], rounds: int) -> np.ndarray:
    model = with_zero_state({"w": np.zeros(2)}, FEDDYN_PREFIX)
    for _ in range(rounds):
        results = [app.train(model, CONFIG) for app in apps]
        model, _ = FedAvg().aggregate(
            [r.params for r in results], [r.num_examples for r in results], model
        )
    return split_dynamic(model)[0]["w"]


def test_on_clients_with_different_optima_feddyn_reaches_the_global_optimum(tmp_path):
    """Client i minimises 0.5 a_i ||w - b_i||^2; the global optimum is the a-weighted mean
    of the b_i, while FedAvg of local optima lands on their plain mean."""
    a, b = [1.0, 4.0], [[0.0, 0.0], [1.0, 2.0]]
    optimum = (a[0] * np.array(b[0]) + a[1] * np.array(b[1])) / sum(a)
    apps = [
        FedDynApp(QuadraticApp(ai, bi), ClientControl(tmp_path / str(i)), "s")
        for i, (ai, bi) in enumerate(zip(a, b, strict=True))
    ]
    feddyn = _run(apps, rounds=60)
    np.testing.assert_allclose(feddyn, optimum, atol=1e-4)
    fedavg_fixed_point = np.mean(b, axis=0)
    assert np.abs(fedavg_fixed_point - optimum).max() > 0.2  # the gap FedDyn closes
    # at the fixed point each client's g_i is its own gradient there, and they sum to 0
    kept = [ClientControl(tmp_path / str(i)).for_session("s", {"w": np.zeros(2)}) for i in (0, 1)]
    for ai, bi, g in zip(a, b, kept, strict=True):
        np.testing.assert_allclose(g["w"], ai * (feddyn - np.array(bi)), atol=1e-3)


def test_g_i_carries_over_rounds_in_memory_and_across_a_restart(tmp_path):
    first = FedDynApp(QuadraticApp(1.0, [1.0, 2.0]), ClientControl(tmp_path / "a"), "s")
    model = with_zero_state({"w": np.zeros(2)}, FEDDYN_PREFIX)
    first.train(model, CONFIG)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # what a restarted process finds
    restarted = FedDynApp(QuadraticApp(1.0, [1.0, 2.0]), ClientControl(tmp_path / "b"), "s")
    fresh = FedDynApp(QuadraticApp(1.0, [1.0, 2.0]), ClientControl(tmp_path / "c"), "s")
    sent = [app.train(model, CONFIG).params["w"] for app in (first, restarted, fresh)]
    np.testing.assert_allclose(sent[0], sent[1], rtol=1e-12)
    assert not np.allclose(sent[0], sent[2])  # g_i = 0 again trains to another place


def test_the_session_setting_reaches_the_client_and_the_runtime_wraps_the_app(tmp_path):
    config = SessionConfig(drift_correction="feddyn", feddyn_alpha=0.1).task_config(
        1, participation=0.5
    )
    assert config["drift_correction"] == "feddyn" and feddyn_alpha(config) == 0.1
    app = drift_corrected_app(QuadraticApp(1.0, [0.0, 0.0]), ClientControl(tmp_path), config)
    assert isinstance(app, FedDynApp)
    assert SessionConfig(drift_correction="feddyn").drift_state_prefix() == FEDDYN_PREFIX
    with pytest.raises(ConfigError, match="feddyn_alpha"):
        feddyn_alpha({"drift_correction": "feddyn"})
    with pytest.raises(ValueError, match="use aggregator 'fedavg'"):
        SessionConfig(drift_correction="feddyn", aggregator="median")
    with pytest.raises(ValueError, match="feddyn_alpha"):
        SessionConfig(drift_correction="feddyn", feddyn_alpha=0)


def test_strata_demo_runs_the_recommended_non_iid_setting():
    from stratafl.cli.run import demo_session

    session = demo_session(20)
    assert (session.drift_correction, session.feddyn_alpha) == ("feddyn", 0.01)
    assert session.aggregator == "fedavg" and session.rounds == 20
