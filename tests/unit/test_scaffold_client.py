"""SCAFFOLD on the client (stratafl.client.scaffold): one round against the paper's formulas
worked by hand, c_i kept across rounds and restarts, and the settings that ask for it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pytest

from stratafl.aggregate.scaffold import CONTROL_PREFIX, control_name
from stratafl.apps.mlp import SgdConfig, init_mlp, sgd_steps, train_sgd
from stratafl.client.app import Config, TrainResult
from stratafl.client.drift import drift_corrected_app, drift_correction_of
from stratafl.client.scaffold import (
    CONTROL_FILE,
    ClientControl,
    CorrectedTraining,
    ScaffoldApp,
    participation,
)
from stratafl.errors import ConfigError
from stratafl.launch.preflight import check_federation, session_from_flags
from stratafl.params import Params
from stratafl.settings import SessionConfig
from tests.support.paths import TEST_APP

B = np.array([1.0, 2.0])
"""The client's optimum: its loss is 0.5 * ||w - B||^2, so its gradient is w - B."""


class QuadraticApp:
    """Full-batch gradient descent on 0.5 * ||w - B||^2: K = ``steps`` steps of rate ``lr``."""

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(2)}

    def train(self, params: Params, config: Config) -> TrainResult:
        return self.train_corrected(params, config, {"w": np.zeros(2)}).result

    def train_corrected(
        self, params: Params, config: Config, correction: Params
    ) -> CorrectedTraining:
        lr, steps = float(config["lr"]), int(config["steps"])
        w = np.array(params["w"], dtype=np.float64)
        for _ in range(steps):
            w = w - lr * (w - B + correction["w"])
        return CorrectedTraining(TrainResult({"w": w}, num_examples=3), steps=steps, lr=lr)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        assert list(params) == ["w"], "validation must see the model without c"
        return {"loss": float(0.5 * np.sum((params["w"] - B) ** 2))}


def _global(w: list[float], c: list[float]) -> Params:
    return {"w": np.array(w), control_name("w"): np.array(c)}


CONFIG = {"lr": 0.1, "steps": 2, "drift_correction": "scaffold", "participation": 0.5}


def _paper_round(x, c, c_i, lr=0.1, steps=2, fraction=0.5):
    """Algorithm 1 of Karimireddy et al. for one client, written out."""
    y = np.array(x, dtype=np.float64)
    for _ in range(steps):
        y = y - lr * (y - B + (c - c_i))
    c_i_new = c_i - c + (x - y) / (steps * lr)
    return y, c_i_new, c + fraction * (c_i_new - c_i)


def test_one_round_equals_the_papers_formulas_worked_by_hand(tmp_path):
    """x = 0, c = (0.5, -0.5), c_i = 0, lr = 0.1, K = 2, f = 1/2, by hand:
    y1 = -0.1 * (0 - B + c) = (0.05, 0.25); y2 = y1 - 0.1 * (y1 - B + c) = (0.095, 0.475);
    c_i+ = 0 - c + (0 - y2) / 0.2 = (-0.975, -1.875); sent c = c + c_i+ / 2 = (0.0125, -1.4375).
    """
    control = ClientControl(tmp_path)
    app = ScaffoldApp(QuadraticApp(), control, "session-1")
    result = app.train(_global([0.0, 0.0], [0.5, -0.5]), CONFIG)
    assert list(result.params) == ["w", control_name("w")]
    np.testing.assert_allclose(result.params["w"], [0.095, 0.475], rtol=1e-12)
    np.testing.assert_allclose(result.params[control_name("w")], [0.0125, -1.4375], rtol=1e-12)
    assert result.num_examples == 3
    kept = control.for_session("session-1", {"w": np.zeros(2)})
    np.testing.assert_allclose(kept["w"], [-0.975, -1.875], rtol=1e-12)


def test_c_i_carries_over_rounds_in_memory_and_across_a_restart(tmp_path):
    first = ScaffoldApp(QuadraticApp(), ClientControl(tmp_path / "a"), "s")
    first.train(_global([0.0, 0.0], [0.5, -0.5]), CONFIG)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # what a restarted process finds
    restarted = ScaffoldApp(QuadraticApp(), ClientControl(tmp_path / "b"), "s")
    x, c, c_i = np.array([0.3, -0.1]), np.array([0.2, 0.4]), np.array([-0.975, -1.875])
    y, c_i_two, sent = _paper_round(x, c, c_i)
    for app in (first, restarted):
        result = app.train(_global(list(x), list(c)), CONFIG)
        np.testing.assert_allclose(result.params["w"], y, rtol=1e-12)
        np.testing.assert_allclose(result.params[control_name("w")], sent, rtol=1e-12)
    for folder in ("a", "b"):
        kept = ClientControl(tmp_path / folder).for_session("s", {"w": np.zeros(2)})
        np.testing.assert_allclose(kept["w"], c_i_two, rtol=1e-12)


def test_a_new_session_starts_c_i_at_zero(tmp_path):
    control = ClientControl(tmp_path)
    control.keep("old", {"w": np.array([1.0, 2.0])})
    assert not ClientControl(tmp_path).for_session("new", {"w": np.zeros(2)})["w"].any()
    result = ScaffoldApp(QuadraticApp(), ClientControl(tmp_path), "new").train(
        _global([0.0, 0.0], [0.5, -0.5]), CONFIG
    )
    np.testing.assert_allclose(result.params[control_name("w")], [0.0125, -1.4375], rtol=1e-12)


@pytest.mark.parametrize("content", [b"not a model file", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"])
def test_an_unreadable_file_is_set_aside_and_c_i_starts_at_zero(tmp_path, caplog, content):
    (tmp_path / CONTROL_FILE).write_bytes(content)
    control = ClientControl(tmp_path)  # reads nothing yet
    assert (tmp_path / CONTROL_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="stratafl.client"):
        values = control.for_session("s", {"w": np.ones(2)})
    assert not values["w"].any()
    assert not (tmp_path / CONTROL_FILE).exists()
    assert (tmp_path / f"{CONTROL_FILE}.unreadable").read_bytes() == content
    assert "unreadable" in caplog.text
    control.keep("s", {"w": np.ones(2)})  # and the next write works
    np.testing.assert_array_equal(
        ClientControl(tmp_path).for_session("s", {"w": np.ones(2)})["w"], 1.0
    )


def test_a_truncated_file_is_set_aside(tmp_path):
    ClientControl(tmp_path).keep("s", {"w": np.arange(100.0)})
    path = tmp_path / CONTROL_FILE
    path.write_bytes(path.read_bytes()[:-8])
    assert not ClientControl(tmp_path).for_session("s", {"w": np.ones(100)})["w"].any()
    assert (tmp_path / f"{CONTROL_FILE}.unreadable").exists()


def test_a_kept_tensor_of_another_layout_starts_at_zero_and_none_leaves_no_file(tmp_path):
    control = ClientControl(tmp_path)
    control.keep("s", {"w": np.ones(3), "b": np.ones(2)})
    values = ClientControl(tmp_path).for_session("s", {"w": np.ones(2), "b": np.ones(2)})
    assert not values["w"].any() and values["b"].tolist() == [1.0, 1.0]
    memory_only = ClientControl(None)
    memory_only.keep("s", {"w": np.ones(2)})
    assert memory_only.for_session("s", {"w": np.zeros(2)})["w"].tolist() == [1.0, 1.0]


def test_validation_and_the_seed_model_see_no_control_variates():
    app = ScaffoldApp(QuadraticApp(), ClientControl(None))
    assert app.validate(_global([1.0, 2.0], [9.0, 9.0]), {}) == {"loss": 0.0}
    assert list(app.initial_params(0)) == ["w"]


def test_an_app_without_train_corrected_is_refused_with_the_fix():
    class Plain:
        def initial_params(self, seed: int) -> Params:
            return {}

        def train(self, params: Params, config: Config) -> TrainResult:
            return TrainResult(params, 1)

        def validate(self, params: Params, config: Config) -> Mapping[str, float]:
            return {}

    with pytest.raises(ConfigError, match="train_corrected"):
        drift_corrected_app(Plain(), ClientControl(None), CONFIG)
    assert isinstance(drift_corrected_app(QuadraticApp(), ClientControl(None), CONFIG), ScaffoldApp)
    assert isinstance(drift_corrected_app(Plain(), ClientControl(None), {}), Plain)
    with pytest.raises(ConfigError, match="train_corrected"):
        check_federation(
            app=TEST_APP,
            clients=2,
            combiners=1,
            partition="iid",
            seed=0,
            session=SessionConfig(drift_correction="scaffold"),
        )


def test_a_model_without_control_variates_is_refused():
    with pytest.raises(ConfigError, match="drift_correction='scaffold'"):
        ScaffoldApp(QuadraticApp(), ClientControl(None)).train({"w": np.zeros(2)}, CONFIG)


def test_the_session_setting_reaches_the_client_as_task_config():
    plain = SessionConfig().task_config(2)
    assert drift_correction_of(plain) == "none" and "participation" not in plain
    config = SessionConfig(drift_correction="scaffold").task_config(2, participation=0.25)
    assert drift_correction_of(config) == "scaffold" and participation(config) == 0.25
    assert participation({}) == 1.0
    with pytest.raises(ConfigError, match="upgrade the client"):
        drift_correction_of({"drift_correction": "scafold"})
    with pytest.raises(ConfigError, match="participation"):
        participation({"participation": "half"})


@pytest.mark.parametrize("aggregator", ["median", "krum:f=1", "norm_bounding:clip_norm=1"])
def test_scaffold_refuses_rules_other_than_fedavg_and_names_the_fix(aggregator):
    with pytest.raises(ValueError, match="needs the fedavg rule"):
        SessionConfig(drift_correction="scaffold", aggregator=aggregator, min_clients=5)


def test_scaffold_takes_a_server_optimiser():
    config = SessionConfig(drift_correction="scaffold", aggregator="fedavg+fedadam")
    assert config.drift_correction == "scaffold"
    with pytest.raises(ValueError):
        SessionConfig(drift_correction="fedprox")  # type: ignore[arg-type]


def test_the_mlp_adds_the_correction_to_every_step():
    """One full-batch step: corrected minus plain is exactly -lr * correction."""
    rng = np.random.default_rng(0)
    params = init_mlp([4, 3, 2], seed=0)
    x, y = rng.normal(size=(6, 4)).astype(np.float32), np.array([0, 1, 0, 1, 1, 0])
    shift = {name: rng.normal(size=v.shape).astype(np.float32) for name, v in params.items()}
    sgd = SgdConfig(epochs=1, batch_size=6, lr=0.5)
    plain = train_sgd(params, x, y, sgd, shuffle_seed=0)
    corrected = train_sgd(params, x, y, sgd, shuffle_seed=0, correction=shift)
    for name in params:
        np.testing.assert_allclose(corrected[name] - plain[name], -0.5 * shift[name], atol=1e-6)
    two_steps = train_sgd(
        params, x, y, replace(sgd, batch_size=3), shuffle_seed=0, correction=shift
    )
    assert not np.allclose(two_steps["fc1.weight"], corrected["fc1.weight"])
    assert sgd_steps(6, epochs=1, batch_size=6) == 1
    assert sgd_steps(7, epochs=2, batch_size=3) == 6
    with pytest.raises(Exception, match="missing"):
        train_sgd(params, x, y, sgd, shuffle_seed=0, correction={"fc1.weight": shift["fc1.weight"]})
    assert CONTROL_PREFIX not in "".join(params)


def test_strata_run_flags_name_the_setting_and_the_fix():
    with pytest.raises(ConfigError, match="--drift-correction 'bogus'.*'scaffold' or 'feddyn'"):
        session_from_flags({"drift_correction": "bogus"}, {})
    with pytest.raises(ConfigError, match="use aggregator 'fedavg'"):
        session_from_flags({"drift_correction": "scaffold", "aggregator": "median"}, {})
    assert session_from_flags({"drift_correction": "scaffold"}, {}).drift_correction == "scaffold"
