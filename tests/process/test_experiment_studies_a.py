"""Studies 2, 3, 7 and 9 of `strata experiment` (shared data, FedAvg against FedSGD, the cost
of each defence, communication): their pieces, and each quick study end to end through the
CLI (real federations on loopback, results in a temporary folder)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stratafl.apps.fashion_mnist import FashionMnistNumpyApp, make_2nn_app, make_app
from stratafl.client.app import ClientContext
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.errors import ConfigError
from stratafl.experiments import (
    STUDIES,
    Size,
    StudyRun,
    communication,
    defence_cost,
    fedavg_vs_fedsgd,
    label_flipping,
    shared_data,
)
from tests.support.strata import strata_succeeds

HAS_DATA = all((SYSTEM_DIR / name).is_file() for name in FILES.values())
MINE = ("shared-data", "fedavg-vs-fedsgd", "defence-cost", "communication")


def test_the_studies_are_registered_in_the_order_of_the_plan():
    names = list(STUDIES)
    assert set(MINE) <= set(names)
    assert names.index("heterogeneity") < names.index("shared-data")
    assert names.index("shared-data") < names.index("fedavg-vs-fedsgd")
    assert names.index("fedavg-vs-fedsgd") < names.index("label-flipping")
    assert names.index("label-flipping") < names.index("defence-cost")
    assert names.index("defence-cost") < names.index("communication")


def test_recovered_is_the_share_of_the_gap_to_pooled_that_sharing_closes():
    assert shared_data.recovered(plain=0.5, shared=0.7, pooled=0.9) == pytest.approx(0.5)
    assert shared_data.recovered(plain=0.5, shared=0.4, pooled=0.9) == pytest.approx(-0.25)
    assert math.isnan(shared_data.recovered(plain=0.9, shared=0.9, pooled=0.9))
    assert shared_data.with_shared("shards:2", 0.05) == "shards:2+shared:0.05"


def test_shared_data_refuses_a_bad_fraction_before_any_start(tmp_path):
    run = StudyRun(Size.QUICK, seeds=(0,), out=tmp_path)
    with pytest.raises(ConfigError, match="not valid"):
        shared_data.run(run, fraction=1.5)
    assert not (tmp_path / "shared-data").exists()


def test_fedsgd_is_one_full_batch_step_and_fedavg_five_epochs_of_32():
    for scale in fedavg_vs_fedsgd.SCALES.values():
        fedsgd, fedavg = fedavg_vs_fedsgd.sessions(scale, seed=4)  # the session bounds hold
        assert (fedsgd.local_epochs, fedsgd.batch_size) == (1, fedavg_vs_fedsgd.FULL_BATCH)
        assert (fedavg.local_epochs, fedavg.batch_size) == (5, 32)
        assert fedsgd.rounds > fedavg.rounds and fedsgd.seed == fedavg.seed == 4
    full = fedavg_vs_fedsgd.SCALES[Size.FULL]
    assert fedavg_vs_fedsgd.FULL_BATCH > 60_000 // full.clients * 2  # above any client here


def test_rounds_to_a_target_is_the_first_round_that_reaches_it():
    assert fedavg_vs_fedsgd.rounds_to(0.7, [0.5, None, 0.7, 0.6, 0.8]) == 3
    assert fedavg_vs_fedsgd.rounds_to(0.9, [0.5, 0.8]) is None


def test_defence_cost_runs_the_label_flipping_rules_on_its_clients():
    for size in Size:
        scale = defence_cost.SCALES[size]
        assert scale is label_flipping.SCALES[size]
        assert (
            "iid" in defence_cost.PARTITIONS[size] and "shards:2" in defence_cost.PARTITIONS[size]
        )
    assert len(defence_cost.PARTITIONS[Size.FULL]) == 4


def test_the_crossover_is_when_a_session_has_moved_as_much_as_the_data():
    assert communication.crossover(data=100.0, per_round=40.0) == pytest.approx(2.5)
    assert communication.verdict(2.5).startswith("federated training moves less")
    assert "up to 2 rounds" in communication.verdict(2.5)
    assert "up to 1 round," in communication.verdict(1.2)
    assert communication.verdict(0.4) == "federated training moves more from its first round"
    custom = StudyRun(Size.QUICK, seeds=(0,), out=Path("x"), app="mine.py:make_app")
    assert communication.models(custom) == {"app": "mine.py:make_app"}


def test_the_2nn_is_mcmahans_two_hidden_layers_of_200():
    params = make_2nn_app(ClientContext()).initial_params(0)
    assert {k: v.shape for k, v in params.items()} == {
        "fc1.weight": (200, 784), "fc1.bias": (200,),
        "fc2.weight": (200, 200), "fc2.bias": (200,),
        "fc3.weight": (10, 200), "fc3.bias": (10,),
    }  # fmt: skip
    assert sum(v.size for v in params.values()) == 199_210
    assert sum(v.size for v in make_app(ClientContext()).initial_params(0).values()) == 101_770
    for bad in ((), (0,), (200,) * 9):
        with pytest.raises(ConfigError, match="hidden layers"):
            FashionMnistNumpyApp(ClientContext(), hidden=bad)


def _quick(name: str, tmp_path: Path) -> tuple[dict, str, Path]:
    strata_succeeds("experiment", name, "--quick", "--out", str(tmp_path), timeout=580)
    folder = tmp_path / name
    readme = (folder / "README.md").read_text()
    assert f"strata experiment {name} --quick --seeds 1" in readme
    return json.loads((folder / "results.json").read_text()), readme, folder


def _slow(test):
    """A quick study end to end: about a minute on 2 idle cores, several on a busy machine."""
    test = pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")(
        test
    )
    return pytest.mark.slow(pytest.mark.timeout(600)(test))


@_slow
def test_quick_shared_data_end_to_end(tmp_path):
    results, readme, folder = _quick("shared-data", tmp_path)
    assert [s["partition"] for s in results["settings"]] == list(shared_data.QUICK_BASES)
    assert {r["partition"] for r in results["runs"]} == {
        p for b in shared_data.QUICK_BASES for p in (b, f"{b}+shared:0.05")
    }
    for setting in results["settings"]:
        for label in ("without", "with"):
            assert 0 <= setting[label]["federated_accuracy"]["mean"] <= 1, setting
        got, expected = (
            setting["gap_recovered"]["mean"],
            shared_data.recovered(
                setting["without"]["federated_accuracy"]["mean"],
                setting["with"]["federated_accuracy"]["mean"],
                setting["without"]["centralized_accuracy"]["mean"],
            ),
        )  # one seed: the per-seed share is the share of the means
        assert math.isnan(expected) if got is None else got == pytest.approx(expected)
        pooled = {setting[x]["centralized_accuracy"]["mean"] for x in ("without", "with")}
        assert len(pooled) == 1  # sharing does not change the pooled data
    assert (folder / "accuracy.png").stat().st_size > 0
    assert "| shards:2 |" in readme and "gap recovered" in readme


@_slow
def test_quick_fedavg_vs_fedsgd_end_to_end(tmp_path):
    results, readme, folder = _quick("fedavg-vs-fedsgd", tmp_path)
    scale = fedavg_vs_fedsgd.SCALES[Size.QUICK]
    for run in results["runs"]:
        assert len(run["accuracy_per_round"]) == scale.rounds[run["method"]]
        assert all(b > 0 for b in run["bytes_per_round"])
        assert 0 < run["largest_client"] < fedavg_vs_fedsgd.FULL_BATCH
    iid = results["settings"][0]
    assert iid["partition"] == "iid" and iid["fedavg"]["reached"] == 1  # one round of E=5 does
    # FedSGD is full-batch descent: the split cannot change its steps, only FedAvg's
    sgd = [r["accuracy_per_round"] for r in results["runs"] if r["method"] == "fedsgd"]
    assert sgd[0] == pytest.approx(sgd[1], abs=1e-3)
    assert (folder / "accuracy.png").stat().st_size > 0
    assert "| iid |" in readme and "| shards:2 |" in readme


@_slow
def test_quick_defence_cost_end_to_end(tmp_path):
    results, readme, folder = _quick("defence-cost", tmp_path)
    rules = label_flipping.rules(label_flipping.SCALES[Size.QUICK])
    partitions = defence_cost.PARTITIONS[Size.QUICK]
    assert {(s["partition"], s["rule"]) for s in results["settings"]} == {
        (p, r) for p in partitions for r in rules
    }
    for setting in results["settings"]:
        clients = setting["clients"]
        assert 0 <= clients["worst"]["mean"] <= clients["p10"]["mean"] <= clients["mean"]["mean"]
        if setting["rule"] == "fedavg":
            assert setting["vs_fedavg"]["mean"] == 0.0
    assert (folder / "accuracy.png").stat().st_size > 0
    assert all(f"| `{rule}` |" in readme for rule in rules)


@_slow
def test_quick_communication_end_to_end(tmp_path):
    results, readme, folder = _quick("communication", tmp_path)
    scale = communication.SCALES[Size.QUICK]
    mlp, two_nn = results["settings"]
    assert (mlp["parameters"], two_nn["parameters"]) == (101_770, 199_210)
    for setting in (mlp, two_nn):
        # every round moves the model down to and up from each client, on both links
        assert setting["copies_per_round"] >= 2 * scale.clients + scale.combiners
        assert all(setting["by_link"][link]["mean"] > 0 for link in communication.LINKS)
        assert setting["data"]["raw"] < setting["data"]["held"]
        assert setting["crossover_raw"] == pytest.approx(
            setting["data"]["raw"] / setting["bytes_per_round"]["mean"]
        )
    assert two_nn["bytes_per_round"]["mean"] > 1.8 * mlp["bytes_per_round"]["mean"]
    assert (folder / "bytes.png").stat().st_size > 0
    assert "| MLP 784-128-10 |" in readme and "| 2NN 784-200-200-10 |" in readme
