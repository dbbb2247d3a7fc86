"""The numpy MLP: it learns real data, its gradients are right, it never mutates inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stratafl.apps.mlp import SgdConfig, evaluate, init_mlp, train_sgd
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR, Dataset, load_fashion_mnist
from stratafl.errors import ConfigError

needs_data = pytest.mark.skipif(
    not all((SYSTEM_DIR / name).is_file() for name in FILES.values()),
    reason="needs `apt-get install dataset-fashion-mnist`",
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    cache: Path = tmp_path_factory.mktemp("fm-cache")
    return load_fashion_mnist(cache).subset(5000, 2000, seed=0)


def _random_problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 3, 64)


def test_init_has_torch_layout_he_scale_and_repeats_per_seed() -> None:
    params = init_mlp([784, 128, 10], seed=0)
    assert {k: v.shape for k, v in params.items()} == {
        "fc1.weight": (128, 784),
        "fc1.bias": (128,),
        "fc2.weight": (10, 128),
        "fc2.bias": (10,),
    }
    assert all(v.dtype == np.float32 for v in params.values())
    assert params["fc1.weight"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert not params["fc1.bias"].any()
    again = init_mlp([784, 128, 10], seed=0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not np.array_equal(params["fc1.weight"], init_mlp([784, 128, 10], 1)["fc1.weight"])


@needs_data
def test_training_on_real_fashion_mnist_beats_chance_by_far(small: Dataset) -> None:
    params = init_mlp([784, 64, 10], seed=0)
    before = evaluate(params, small.x_test, small.y_test)
    sgd = SgdConfig(epochs=3, batch_size=32, lr=0.05)
    trained = train_sgd(params, small.x_train, small.y_train, sgd, shuffle_seed=0)
    after = evaluate(trained, small.x_test, small.y_test)
    assert before["accuracy"] < 0.3
    assert after["accuracy"] > 0.75
    assert after["loss"] < before["loss"]


def test_one_full_batch_step_follows_the_finite_difference_gradient() -> None:
    x, y = _random_problem()
    params = init_mlp([12, 8, 3], seed=1)
    lr = 1e-3
    stepped = train_sgd(params, x, y, SgdConfig(batch_size=len(y), lr=lr), shuffle_seed=0)
    eps = 1e-2
    for name in params:
        flat = params[name].reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 5)):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name].reshape(-1)[i] += eps
            minus[name].reshape(-1)[i] -= eps
            numeric = (evaluate(plus, x, y)["loss"] - evaluate(minus, x, y)["loss"]) / (2 * eps)
            analytic = (flat[i] - stepped[name].reshape(-1)[i]) / lr
            assert analytic == pytest.approx(numeric, rel=0.05, abs=2e-3), (name, i)


def test_train_returns_new_arrays_and_leaves_inputs_untouched() -> None:
    x, y = _random_problem()
    params = init_mlp([12, 8, 3], seed=0)
    anchor = init_mlp([12, 8, 3], seed=5)
    copies = [{k: v.copy() for k, v in p.items()} for p in (params, anchor)]
    x0, y0 = x.copy(), y.copy()
    sgd = SgdConfig(epochs=2, batch_size=8, lr=0.1, proximal_mu=0.5)
    out = train_sgd(params, x, y, sgd, shuffle_seed=0, global_params=anchor)
    for original, copy in zip((params, anchor), copies, strict=True):
        assert all(np.array_equal(original[k], copy[k]) for k in copy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    assert all(not np.shares_memory(out[k], params[k]) for k in params)
    assert not np.array_equal(out["fc1.weight"], params["fc1.weight"])


def test_training_is_reproducible_per_seed() -> None:
    x, y = _random_problem()
    params = init_mlp([12, 8, 3], seed=0)
    sgd = SgdConfig(epochs=2, batch_size=8, lr=0.1)
    a = train_sgd(params, x, y, sgd, shuffle_seed=3)
    b = train_sgd(params, x, y, sgd, shuffle_seed=3)
    c = train_sgd(params, x, y, sgd, shuffle_seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc1.weight"], c["fc1.weight"])


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)))


def test_proximal_term_pulls_toward_the_global_model() -> None:
    x, y = _random_problem()
    start = init_mlp([12, 8, 3], seed=0)
    far = {k: v + 1.0 for k, v in start.items()}
    sgd = SgdConfig(epochs=5, batch_size=16, lr=0.05)
    prox = SgdConfig(epochs=5, batch_size=16, lr=0.05, proximal_mu=1.0)
    plain = train_sgd(start, x, y, sgd, shuffle_seed=0)
    prox_self = train_sgd(start, x, y, prox, shuffle_seed=0)
    prox_far = train_sgd(start, x, y, prox, shuffle_seed=0, global_params=far)
    assert _distance(prox_self, start) < _distance(plain, start)
    assert _distance(prox_far, far) < _distance(plain, far)


def test_zero_epochs_returns_an_equal_copy() -> None:
    x, y = _random_problem()
    params = init_mlp([12, 8, 3], seed=0)
    out = train_sgd(params, x, y, SgdConfig(epochs=0, batch_size=8, lr=0.1), shuffle_seed=0)
    assert all(np.array_equal(out[k], params[k]) and out[k] is not params[k] for k in params)


def test_evaluate_is_batched_consistently() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((9000, 12), dtype=np.float32)  # more rows than one evaluation batch
    y = rng.integers(0, 3, 9000)
    params = init_mlp([12, 8, 3], seed=0)
    whole = evaluate(params, x, y)
    parts = [evaluate(params, x[:4500], y[:4500]), evaluate(params, x[4500:], y[4500:])]
    assert whole["accuracy"] == pytest.approx(np.mean([p["accuracy"] for p in parts]))
    assert whole["loss"] == pytest.approx(np.mean([p["loss"] for p in parts]), rel=1e-5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, x, y: init_mlp([784], 0), "input and an output"),
        (lambda p, x, y: evaluate(p, x[:, :5], y), r"x must be \(N, 12\)"),
        (lambda p, x, y: evaluate(p, x, y[:3]), "y must be"),
        (lambda p, x, y: evaluate(p, x, y + 3), r"labels must be in \[0, 3\)"),
        (lambda p, x, y: evaluate({"w": p["fc1.weight"]}, x, y), "not an MLP"),
        (lambda p, x, y: evaluate(p, x[:0], y[:0]), "0 examples"),
        (lambda p, x, y: train_sgd(p, x, y, SgdConfig(batch_size=0), shuffle_seed=0), "batch_size"),
        (lambda p, x, y: train_sgd(p, x, y, SgdConfig(lr=0), shuffle_seed=0), "lr > 0"),
        (
            lambda p, x, y: train_sgd(p, x, y, SgdConfig(proximal_mu=-1), shuffle_seed=0),
            "proximal_mu",
        ),
    ],
)
def test_bad_inputs_raise_config_errors_that_say_why(call: object, message: str) -> None:
    x, y = _random_problem()
    with pytest.raises(ConfigError, match=message):
        call(init_mlp([12, 8, 3], seed=0), x, y)  # type: ignore[operator]


def test_sgd_config_reads_round_config_with_defaults() -> None:
    defaults = SgdConfig(epochs=2, lr=0.1)
    cfg = SgdConfig.from_config({"epochs": "3", "round": 4, "proximal_mu": 0.01}, defaults)
    assert cfg == SgdConfig(epochs=3, batch_size=32, lr=0.1, proximal_mu=0.01, round=4)
    assert cfg.shuffle_seed(0) != cfg.shuffle_seed(1)
    assert cfg.shuffle_seed(0) != SgdConfig(round=5).shuffle_seed(0)
    with pytest.raises(ConfigError, match="non-numeric"):
        SgdConfig.from_config({"lr": "fast"})
