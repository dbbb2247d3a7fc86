"""Each attack does what its docstring claims, on small arrays; the launcher runs one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from stratafl.attacks import (
    Backdoor,
    Combined,
    GaussianNoise,
    LabelFlip,
    ScaleUpdate,
    SignFlip,
    UpdatePoisoningApp,
    attack_spec,
    attack_success_rate,
    attacked,
    parse_attack,
    parse_attack_plan,
)
from stratafl.client.app import ClientApp, ClientContext, Config, TrainResult
from stratafl.errors import ConfigError
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.params import Params
from stratafl.settings import SessionConfig
from tests.support.paths import TEST_APP


def _data(n: int = 200, side: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (n, side * side)).astype(np.float32)
    return x, rng.integers(0, 10, n)


def test_label_flip_maps_every_label_l_to_9_minus_l_and_copies():
    x, y = _data()
    x0, y0 = x.copy(), y.copy()
    x_out, y_out = LabelFlip().transform(x, y)
    np.testing.assert_array_equal(y_out, 9 - y0)
    np.testing.assert_array_equal(x_out, x0)
    assert x_out is not x and np.array_equal(y, y0) and np.array_equal(x, x0)  # inputs untouched


def test_label_flip_source_to_target_changes_only_the_source_class():
    _, y = _data()
    _, y_out = LabelFlip(source=6, target=0).transform(np.zeros((len(y), 1)), y)
    np.testing.assert_array_equal(y_out[y == 6], 0)
    np.testing.assert_array_equal(y_out[y != 6], y[y != 6])
    assert (y == 6).any()


def test_backdoor_stamps_and_relabels_exactly_the_fraction_of_non_target_examples():
    x, y = _data(n=200, side=6)
    attack = Backdoor(target=0, fraction=0.25, size=2, value=1.0, seed=3)
    x_out, y_out = attack.transform(x, y)
    changed = np.flatnonzero((x_out != x).any(axis=1))
    assert len(changed) == 50  # round(0.25 * 200), all among the non-target examples
    assert (y[changed] != 0).all() and (y_out[changed] == 0).all()
    images = x_out.reshape(-1, 6, 6)
    np.testing.assert_array_equal(images[changed][:, 4:, 4:], 1.0)  # the 2x2 corner
    untouched = np.setdiff1d(np.arange(200), changed)
    np.testing.assert_array_equal(y_out[untouched], y[untouched])
    np.testing.assert_array_equal(x_out[untouched], x[untouched])
    # Pixels outside the trigger never change, and the choice is reproducible.
    np.testing.assert_array_equal(images[changed][:, :4, :], x.reshape(-1, 6, 6)[changed][:, :4, :])
    again, _ = attack.transform(x, y)
    np.testing.assert_array_equal(again, x_out)


def test_backdoor_takes_image_arrays_and_refuses_what_is_not_an_image():
    images = np.zeros((3, 5, 7), np.float32)
    stamped = Backdoor(size=3, value=0.5).stamp(images)
    assert stamped.shape == (3, 5, 7) and stamped.sum() == 3 * 9 * 0.5 and images.sum() == 0
    with pytest.raises(ConfigError, match="not square images"):
        Backdoor().stamp(np.zeros((2, 10)))
    with pytest.raises(ConfigError, match="does not fit"):
        Backdoor(size=5).stamp(np.zeros((2, 16)))


def _models() -> tuple[Params, Params]:
    rng = np.random.default_rng(1)
    global_ = {"w": rng.normal(size=(4, 3)).astype(np.float32), "step": np.array([7], np.int64)}
    trained = {
        "w": global_["w"] + rng.normal(size=(4, 3)).astype(np.float32),
        "step": np.array([8]),
    }
    return global_, trained


def test_scale_and_sign_flip_rewrite_the_update_relative_to_the_global_model():
    global_, trained = _models()
    update = trained["w"].astype(np.float64) - global_["w"]
    boosted = ScaleUpdate(factor=10).poison(global_, trained, seed=0)
    np.testing.assert_allclose(boosted["w"] - global_["w"], 10 * update, rtol=1e-5, atol=1e-5)
    flipped = SignFlip(factor=2).poison(global_, trained, seed=0)
    np.testing.assert_allclose(flipped["w"] - global_["w"], -2 * update, rtol=1e-5, atol=1e-5)
    for out in (boosted, flipped):
        assert out["w"].dtype == np.float32
        np.testing.assert_array_equal(out["step"], [8])  # integer tensors pass through


def test_noise_replaces_the_update_with_gaussian_noise_of_the_given_std():
    global_ = {"w": np.ones(20_000, np.float32)}
    trained = {"w": np.full(20_000, 5.0, np.float32)}
    attack = GaussianNoise(std=3.0)
    noised = attack.poison(global_, trained, seed=11)
    shift = noised["w"].astype(np.float64) - 1.0
    assert abs(shift.mean()) < 0.1 and shift.std() == pytest.approx(3.0, rel=0.03)
    np.testing.assert_array_equal(attack.poison(global_, trained, seed=11)["w"], noised["w"])
    assert not np.array_equal(attack.poison(global_, trained, seed=12)["w"], noised["w"])


class _App:
    """A `ClientApp` that adds 1 to every weight and exposes its training labels."""

    def __init__(self, labels: np.ndarray | None = None) -> None:
        self.labels = labels

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(3, np.float32)}

    def train(self, params: Params, config: Config) -> TrainResult:
        return TrainResult({"w": params["w"] + 1}, num_examples=5, metrics={"m": 1.0})

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        return {"accuracy": 0.5}


class _PoisonableApp(_App):
    def with_training_transform(self, transform):
        assert self.labels is not None
        return _PoisonableApp(transform(np.zeros((len(self.labels), 1)), self.labels)[1])


def test_attacked_wraps_train_for_model_poisoning_and_keeps_the_rest():
    app = attacked(_App(), "sign_flip:factor=3")
    assert isinstance(app, UpdatePoisoningApp) and isinstance(app, ClientApp)
    result = app.train({"w": np.full(3, 2.0, np.float32)}, {"seed": 4})
    np.testing.assert_array_equal(result.params["w"], [-1.0, -1.0, -1.0])  # 2 - 3 * 1
    assert result.num_examples == 5 and result.metrics == {"m": 1.0}
    assert app.validate({}, {}) == {"accuracy": 0.5}


def test_attacked_poisons_the_data_of_an_app_that_offers_it_and_refuses_others():
    poisoned = attacked(_PoisonableApp(np.array([0, 1, 9])), "label_flip")
    assert isinstance(poisoned, _PoisonableApp)
    np.testing.assert_array_equal(poisoned.labels, [9, 8, 0])
    with pytest.raises(ConfigError, match="does not offer with_training_transform"):
        attacked(_App(), "backdoor")


def test_a_combined_attack_poisons_the_data_then_boosts_the_update():
    app = attacked(_PoisonableApp(np.array([0, 1, 9])), "label_flip+scale:factor=4")
    assert isinstance(app, UpdatePoisoningApp) and isinstance(app.app, _PoisonableApp)
    np.testing.assert_array_equal(app.app.labels, [9, 8, 0])
    result = app.train({"w": np.full(3, 2.0, np.float32)}, {"seed": 1})
    np.testing.assert_array_equal(result.params["w"], [6.0, 6.0, 6.0])  # 2 + 4 * 1
    with pytest.raises(ConfigError, match="does not offer with_training_transform"):
        attacked(_App(), "backdoor+scale:factor=4")


def test_attack_success_rate_counts_stamped_non_target_images_classified_as_target():
    x = np.zeros((6, 16), np.float32)
    x[:, 0] = [0.9, 0.9, 0.1, 0.1, 0.1, 0.9]
    y = np.array([3, 0, 5, 2, 7, 0])  # two target-class images: left out
    backdoor = Backdoor(target=0, size=2)

    def predict(batch: np.ndarray) -> np.ndarray:  # fooled by the trigger when pixel 0 is bright
        triggered = batch.reshape(-1, 4, 4)[:, 3, 3] == 1.0
        return np.where(triggered & (batch[:, 0] > 0.5), 0, 1)

    assert attack_success_rate(predict, x, y, backdoor) == pytest.approx(1 / 4)
    with pytest.raises(ConfigError, match="not 0"):
        attack_success_rate(predict, x[[1, 5]], y[[1, 5]], backdoor)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("label_flip", LabelFlip()),
        ("label_flip:source=7,target=1", LabelFlip(source=7, target=1)),
        (" Backdoor: target=0 , fraction=0.5 ", Backdoor(target=0, fraction=0.5)),
        ("scale:factor=10", ScaleUpdate(factor=10.0)),
        ("sign_flip", SignFlip()),
        ("noise:std=10", GaussianNoise(std=10.0)),
        (
            "backdoor:target=2+scale:factor=10",
            Combined(Backdoor(target=2), ScaleUpdate(factor=10.0)),
        ),
    ],
)
def test_specs_parse_and_print_back(spec, expected):
    attack = parse_attack(spec)
    assert attack == expected
    assert parse_attack(attack_spec(attack)) == attack


@pytest.mark.parametrize(
    "spec, message",
    [
        ("flip", r"unknown attack 'flip'; valid attacks are \['backdoor', 'label_flip'"),
        ("scale:gamma=2", r"scale has no parameter 'gamma'; its parameters are \['factor'\]"),
        ("scale:factor", "is not key=value"),
        ("scale:factor=big", "factor='big' is not a number"),
        ("scale:factor=0", r"factor=0.0 must be a number in \(0, 1e\+06\]"),
        ("noise:std=inf", "must be a finite number"),
        ("label_flip:source=7", "give both source= and target="),
        ("label_flip:source=7,target=10", r"target=10 must be in \[0, 10\)"),
        ("label_flip:source=3,target=3", "pick two"),
        ("backdoor:fraction=0", r"fraction=0.0 must be in \(0, 1\]"),
        ("backdoor:target=1.5", "target='1.5' is not an integer"),
        ("sign_flip:factor=1,factor=2", "given twice"),
        ("scale:factor=2+backdoor", "one data attack and one model attack, data first"),
        ("backdoor+label_flip", "one data attack and one model attack"),
        ("backdoor+scale+sign_flip", "one data attack and one model attack"),
        ("backdoor+scale:factor=-1", r"factor=-1.0 must be a number in \(0"),
    ],
)
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_attack(spec)


def test_a_bad_attack_plan_fails_before_a_federation_starts():
    assert parse_attack_plan({0: "sign_flip"}, clients=2) == {0: SignFlip()}
    with pytest.raises(ConfigError, match="attack on client 2, but the federation has clients"):
        FederationSpec(app=TEST_APP, clients=2, attacks={2: "sign_flip"})
    with pytest.raises(ConfigError, match="unknown attack"):
        FederationSpec(app=TEST_APP, clients=2, attacks={0: "flip"})


def test_the_fashion_mnist_app_offers_its_training_data_to_attacks():
    pytest.importorskip("stratafl.apps.fashion_mnist")
    from stratafl.apps.fashion_mnist import make_small_app

    context = ClientContext(partition_id=1, num_partitions=4, partitioner="iid")
    clean = make_small_app(context)
    flipped: Any = attacked(clean, "label_flip")
    assert flipped is not clean
    np.testing.assert_array_equal(flipped.train_labels(), 9 - clean.train_labels())
    np.testing.assert_array_equal(flipped.test_data()[1], clean.test_data()[1])


@pytest.mark.slow
def test_a_federation_client_runs_the_attack_its_spec_names(tmp_path):
    # Client i adds i+1 and reports 10(i+1) examples; client 1 flips its sign: it sends
    # -2 instead of +2, so FedAvg of one round from zeros is (10 - 40) / 30 = -1.
    spec = FederationSpec(
        app=TEST_APP, clients=2, combiners=1, workdir=tmp_path / "fed", attacks={1: "sign_flip"}
    )
    with LocalFederation(spec) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        session, _ = fed.run_session(SessionConfig(rounds=1, min_clients=2))
        assert session.status == "finished", session.reason
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
    np.testing.assert_allclose(params["w"], -1.0)
