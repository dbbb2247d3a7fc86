"""Studies 11 and 12 (drift correction, backdoor defences): their settings, their verdicts,
and each end to end at the quick size on real federations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.experiments import STUDIES, Size, StudyRun, backdoor_defences, drift_correction
from stratafl.settings import SessionConfig

HAS_DATA = all((SYSTEM_DIR / name).is_file() for name in FILES.values())


def test_the_new_studies_run_last_in_the_registry():
    assert list(STUDIES)[-2:] == ["drift-correction", "backdoor-defences"]


@pytest.mark.parametrize("size", list(Size))
def test_every_variant_and_rule_is_a_session_the_controller_accepts(size):
    scale = drift_correction.SCALES[size]
    configs = drift_correction.sessions(scale, seed=3)
    assert len(configs) == len(scale.variants)
    by_label = dict(zip((v.label for v in scale.variants), configs, strict=True))
    assert by_label["scaffold"].drift_correction == "scaffold"
    assert by_label["feddyn alpha=0.01"].drift_correction == "feddyn"
    assert by_label["fedavg"].aggregator == "fedavg"
    if "fedavg E=2" in by_label:
        assert by_label["fedavg E=2"].local_epochs == 2
    assert all(c.rounds == scale.rounds and c.seed == 3 for c in configs)
    defences = backdoor_defences.SCALES[size]
    for rule in backdoor_defences.rules(defences):
        SessionConfig(min_clients=defences.clients, aggregator=rule)
    assert {"flame", "rlr", "fedavg"} <= set(backdoor_defences.rules(defences))


def _cell(partition, fraction, rule, accuracy, asr):
    return {
        "partition": partition,
        "fraction": fraction,
        "rule": rule,
        "accuracy": {"mean": accuracy, "std": 0.0},
        "asr": {"mean": asr, "std": 0.0},
    }


def test_a_defence_meets_the_goals_only_if_it_is_cheap_everywhere_and_stops_the_backdoor():
    results = {
        "rules": ["fedavg", "flame", "cheap_but_open", "closed_but_costly"],
        "cases": [["iid", 0.0], ["shards:2", 0.0], ["dirichlet:0.5", 0.0], ["dirichlet:0.5", 0.2]],
        "settings": [
            *(_cell(p, 0.0, "fedavg", 0.85, 0.01) for p in ("iid", "shards:2", "dirichlet:0.5")),
            _cell("dirichlet:0.5", 0.2, "fedavg", 0.84, 0.97),
            *(_cell(p, 0.0, "flame", 0.845, 0.01) for p in ("iid", "shards:2", "dirichlet:0.5")),
            _cell("dirichlet:0.5", 0.2, "flame", 0.842, 0.03),
            *(
                _cell(p, 0.0, "cheap_but_open", 0.85, 0.01)
                for p in ("iid", "shards:2", "dirichlet:0.5")
            ),
            _cell("dirichlet:0.5", 0.2, "cheap_but_open", 0.85, 0.40),
            _cell("iid", 0.0, "closed_but_costly", 0.85, 0.01),
            _cell("shards:2", 0.0, "closed_but_costly", 0.70, 0.01),
            _cell("dirichlet:0.5", 0.0, "closed_but_costly", 0.85, 0.01),
            _cell("dirichlet:0.5", 0.2, "closed_but_costly", 0.85, 0.0),
        ],
    }
    verdicts = {v["rule"]: v for v in backdoor_defences.verdicts(results)}
    assert verdicts["flame"]["meets"]
    assert verdicts["flame"]["worst_cost"] == pytest.approx(0.005)
    assert verdicts["flame"]["attacked"][0]["loss_vs_clean_fedavg"] == pytest.approx(0.008)
    assert not verdicts["fedavg"]["meets"]  # the backdoor gets through
    assert not verdicts["cheap_but_open"]["meets"]
    assert not verdicts["closed_but_costly"]["meets"]  # 15 points on shards
    assert verdicts["closed_but_costly"]["worst_cost"] == pytest.approx(0.15)


def test_the_best_variant_is_chosen_within_fedavg_s_budget_of_epochs():
    results = {
        "settings": [
            {"partition": "shards:2", "variant": "fedavg", "same_budget": True,
             "accuracy": {"mean": 0.75}},
            {"partition": "shards:2", "variant": "scaffold", "same_budget": True,
             "accuracy": {"mean": 0.80}},
            {"partition": "shards:2", "variant": "fedavg E=2", "same_budget": False,
             "accuracy": {"mean": 0.90}},
        ]
    }  # fmt: skip
    assert drift_correction.best(results, "shards:2")["variant"] == "scaffold"


def _quick(name: str, tmp_path: Path) -> tuple[dict, str, Path]:
    run = StudyRun(Size.QUICK, seeds=(0,), out=tmp_path)
    results = STUDIES[name].run(run)
    folder = tmp_path / name
    assert json.loads((folder / "results.json").read_text())["study"] == name
    return results, (folder / "README.md").read_text(), folder


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_drift_correction_end_to_end(tmp_path):
    results, readme, folder = _quick("drift-correction", tmp_path)
    scale = drift_correction.SCALES[Size.QUICK]
    assert len(results["runs"]) == len(scale.partitions) * len(scale.variants)
    for run in results["runs"]:
        assert 0.0 <= run["accuracy"] <= 1.0
        assert len(run["accuracy_per_round"]) == scale.rounds
        assert run["gap_to_pooled"] == pytest.approx(results["pooled"]["mean"] - run["accuracy"])
    megabytes = {r["variant"]: r["megabytes"] for r in results["runs"]}
    assert megabytes["scaffold"] > 1.5 * megabytes["fedavg"]  # the control variates travel
    assert megabytes["feddyn alpha=0.01"] > 1.5 * megabytes["fedavg"]  # and FedDyn's h
    assert "| `scaffold` |" in readme and "Best within FedAvg's budget" in readme
    assert (folder / "accuracy.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_backdoor_defences_end_to_end(tmp_path):
    results, readme, folder = _quick("backdoor-defences", tmp_path)
    scale = backdoor_defences.SCALES[Size.QUICK]
    rules = backdoor_defences.rules(scale)
    got = {(s["partition"], s["fraction"], s["rule"]) for s in results["settings"]}
    assert got == {(p, f, r) for p, f in backdoor_defences.cases(scale) for r in rules}
    for run in results["runs"]:
        assert len(run["malicious"]) == (1 if run["fraction"] > 0 else 0)
        assert 0.0 <= run["asr"] <= 1.0
        if run["fraction"] == 0:
            assert math.isnan(run["attackers_left_out"])  # nobody to leave out
        if run["rule"] in ("fedavg", "trimmed_mean:beta=0.2", "rlr"):
            assert run["honest_left_out"] == 0.0  # they use every update
        if run["rule"] == "multikrum:f=1":  # leaves out 1 of the 7 updates in every round
            bad = len(run["malicious"])
            attackers = run["attackers_left_out"] if bad else 0.0
            left_out = bad * attackers + (7 - bad) * run["honest_left_out"]
            assert left_out == pytest.approx(1.0)
    assert "## Against the goals" in readme and "| `flame` |" in readme
    assert "## Whose updates the rule left out" in readme and "| `multikrum:f=1` |" in readme
    assert (folder / "defences.png").stat().st_size > 0
