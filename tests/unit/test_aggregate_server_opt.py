"""Server optimisers: one hand-computed step each, state export, purity, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stratafl.aggregate import (
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerAverage,
    ServerOptState,
)
from stratafl.aggregate.server_opt import ServerOptimizer
from stratafl.errors import ConfigError
from stratafl.params import Params


def frozen(values: list[float], dtype: type = np.float64) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


def scalar(x: float) -> Params:
    return {"w": frozen([x])}


# x_0 = 1, merged = 1.5: delta = 0.5; tau = 1e-3 so v_{-1} = 1e-6.
GLOBAL, MERGED = scalar(1.0), scalar(1.5)


def test_server_average_takes_the_merged_model() -> None:
    new, state = ServerAverage().step(GLOBAL, MERGED, ServerOptState())
    assert new["w"][0] == 1.5
    assert state.step == 1
    new["w"][0] = 9.0  # an owned copy
    assert MERGED["w"][0] == 1.5


def test_fedavgm_two_steps_by_hand() -> None:
    opt = FedAvgM(server_lr=1.0, momentum=0.9)
    new, state = opt.step(GLOBAL, MERGED, ServerOptState())
    assert new["w"][0] == pytest.approx(1.5)  # m = 0.5
    new, state = opt.step(new, scalar(1.7), state)
    assert new["w"][0] == pytest.approx(1.5 + 0.9 * 0.5 + 0.2)  # m = 0.45 + 0.2
    assert state.step == 2


def test_fedavgm_without_momentum_at_unit_rate_is_fedavg() -> None:
    new, _ = FedAvgM(server_lr=1.0, momentum=0.0).step(GLOBAL, MERGED, ServerOptState())
    assert new["w"][0] == 1.5


def test_fedadam_step_by_hand() -> None:
    new, state = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3).step(
        GLOBAL, MERGED, ServerOptState()
    )
    m = 0.1 * 0.5
    v = 0.99 * 1e-6 + 0.01 * 0.25
    assert state.m["w"][0] == pytest.approx(m)
    assert state.v["w"][0] == pytest.approx(v)
    assert new["w"][0] == pytest.approx(1.0 + 0.1 * m / (math.sqrt(v) + 1e-3))


def test_fedyogi_step_by_hand() -> None:
    new, state = FedYogi(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3).step(
        GLOBAL, MERGED, ServerOptState()
    )
    v = 1e-6 + 0.01 * 0.25  # sign(v - delta^2) = -1
    assert state.v["w"][0] == pytest.approx(v)
    assert new["w"][0] == pytest.approx(1.0 + 0.1 * 0.05 / (math.sqrt(v) + 1e-3))
    # second step with a tiny delta: v > delta^2, so v shrinks by (1 - beta2) delta^2
    _, state2 = FedYogi(server_lr=0.1, tau=1e-3).step(new, new, state)
    assert state2.v["w"][0] == pytest.approx(v)  # delta = 0


def test_fedadagrad_step_by_hand() -> None:
    new, state = FedAdagrad(server_lr=0.1, tau=1e-3).step(GLOBAL, MERGED, ServerOptState())
    v = 1e-6 + 0.25
    assert state.v["w"][0] == pytest.approx(v)
    assert new["w"][0] == pytest.approx(1.0 + 0.1 * 0.5 / (math.sqrt(v) + 1e-3))


ALL: list[ServerOptimizer] = [
    ServerAverage(),
    FedAvgM(server_lr=0.5, momentum=0.9),
    FedAdam(server_lr=0.05),
    FedYogi(server_lr=0.05),
    FedAdagrad(server_lr=0.05),
]


def trajectory(rng_seed: int) -> list[Params]:
    rng = np.random.default_rng(rng_seed)
    return [
        {
            "w": rng.normal(size=(3, 2)).astype(np.float32),
            "count": np.array([i, i + 1], dtype=np.int64),
        }
        for i in range(4)
    ]


@pytest.mark.parametrize("opt", ALL, ids=lambda o: o.name)
def test_state_survives_an_export_and_restore(opt: ServerOptimizer) -> None:
    merged = trajectory(0)
    x: Params = {"w": np.zeros((3, 2), dtype=np.float32), "count": np.zeros(2, dtype=np.int64)}
    state = ServerOptState()
    uninterrupted = []
    for target in merged:
        x, state = opt.step(x, target, state)
        uninterrupted.append(x)
    x = {"w": np.zeros((3, 2), dtype=np.float32), "count": np.zeros(2, dtype=np.int64)}
    state = ServerOptState()
    for index, target in enumerate(merged):
        x, state = opt.step(x, target, state)
        state = ServerOptState.from_arrays(state.to_arrays())  # a controller restart
        np.testing.assert_array_equal(x["w"], uninterrupted[index]["w"])
    assert state.step == 4
    assert x["w"].dtype == np.float32
    np.testing.assert_array_equal(x["count"], merged[-1]["count"])  # not optimised


def test_exported_state_is_named_arrays() -> None:
    _, state = FedAdam().step(trajectory(1)[0], trajectory(1)[1], ServerOptState())
    arrays = state.to_arrays()
    assert sorted(arrays) == ["m/w", "step", "v/w"]
    assert arrays["step"].dtype == np.int64
    assert arrays["m/w"].dtype == np.float32


@pytest.mark.parametrize("opt", ALL, ids=lambda o: o.name)
def test_step_modifies_nothing(opt: ServerOptimizer) -> None:
    x = {"w": frozen([1.0, 2.0])}
    target = {"w": frozen([2.0, 0.0])}
    _, state = opt.step(x, target, ServerOptState())
    for array in [*state.m.values(), *state.v.values()]:
        array.setflags(write=False)
    opt.step(x, target, state)


def test_state_from_another_model_is_refused() -> None:
    _, state = FedAdam().step(scalar(1.0), scalar(2.0), ServerOptState())
    with pytest.raises(ConfigError, match="fresh ServerOptState"):
        FedAdam().step({"w": frozen([1.0, 2.0])}, {"w": frozen([1.0, 2.0])}, state)
    with pytest.raises(ConfigError, match="fresh ServerOptState"):
        FedAdam().step({"u": frozen([1.0])}, {"u": frozen([1.0])}, state)


def test_bad_exported_state_is_refused() -> None:
    with pytest.raises(ConfigError, match="'step'"):
        ServerOptState.from_arrays({"m/w": np.zeros(1)})
    with pytest.raises(ConfigError, match="'x/w'"):
        ServerOptState.from_arrays({"step": np.array(1), "x/w": np.zeros(1)})


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FedAdam(server_lr=0.0), "server_lr=0.0"),
        (lambda: FedYogi(beta2=1.0), "beta2=1.0"),
        (lambda: FedAdagrad(tau=0.0), "tau=0.0"),
        (lambda: FedAvgM(momentum=-0.1), "momentum=-0.1"),
    ],
)
def test_bad_parameters_are_named(factory, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        factory()
