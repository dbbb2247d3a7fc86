"""`strata experiment`: the study registry, its statistics and reports, and each quick study
end to end through the CLI (real federations on loopback, results in a temporary folder)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stratafl.aggregate import parse_aggregator
from stratafl.cli.experiment import experiment_cli
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.errors import ConfigError
from stratafl.experiments import (
    STUDIES,
    Size,
    StudyRun,
    flip_report,
    get_study,
    heterogeneity,
    label_flipping,
)
from stratafl.experiments.evaluation import label_mixes, mix_accuracies, pooled_app
from stratafl.experiments.output import markdown_table, write_json
from stratafl.experiments.study import command, mean_std, spread
from tests.support.paths import TEST_APP
from tests.support.strata import strata_succeeds

HAS_DATA = all((SYSTEM_DIR / name).is_file() for name in FILES.values())


def test_the_registry_names_its_studies_and_refuses_unknown_ones():
    assert list(STUDIES) == [
        "heterogeneity", "shared-data", "fedavg-vs-fedsgd", "label-flipping", "backdoor",
        "model-poisoning", "defence-cost", "communication", "across-combiners",
        "drift-correction", "backdoor-defences",
    ]  # fmt: skip
    assert get_study("heterogeneity") is heterogeneity.STUDY
    with pytest.raises(ConfigError, match=r"unknown study 'hetero'; valid studies are"):
        get_study("hetero")
    with pytest.raises(ConfigError, match="give 1 to 100 seeds"):
        StudyRun(Size.QUICK, seeds=(), out=Path("x"))


def test_statistics_over_seeds_and_over_clients():
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    stats = mean_std([0.1, 0.3, math.nan])
    assert stats["mean"] == pytest.approx(0.2) and stats["std"] == pytest.approx(0.1414, abs=1e-4)
    scores = [0.9, 0.5, 0.7, 0.8, 0.6, 0.9, 0.9, 0.8, 0.7, 0.6, 0.8]
    clients = spread(scores)
    assert clients["worst"] == 0.5
    assert clients["p10"] == pytest.approx(np.percentile(scores, 10))
    assert clients["mean"] == pytest.approx(np.mean(scores))
    assert clients["std"] == pytest.approx(np.std(scores))


def test_every_label_flipping_rule_runs_on_its_client_count():
    for size, scale in label_flipping.SCALES.items():
        specs = label_flipping.rules(scale)
        assert [s.split(":")[0] for s in specs] == [
            "fedavg", "median", "trimmed_mean", "krum", "multikrum", "bulyan", "norm_bounding",
        ], size  # fmt: skip
        for spec in specs:
            rule = parse_aggregator(spec).rule
            assert rule.min_updates <= scale.clients, (size, spec)
        worst = max(label_flipping.malicious_count(f, scale.clients) for f in scale.fractions)
        assert worst >= 1 and f"krum:f={worst}" in specs


def test_malicious_clients_are_seeded_and_nested():
    ten = label_flipping.malicious_clients(0.1, 10, seed=3)
    twenty = label_flipping.malicious_clients(0.2, 10, seed=3)
    assert len(ten) == 1 and len(twenty) == 2 and set(ten) <= set(twenty)
    assert label_flipping.malicious_clients(0.2, 10, seed=3) == twenty
    assert label_flipping.malicious_clients(0.0, 10, seed=3) == []


def _run(rule: str, attack: str, fraction: float, seed: int, recall6: float) -> dict:
    recalls = [0.9] * 10
    recalls[6] = recall6
    recalls[2] = 0.4
    return {
        "partition": "iid",
        "attack": attack,
        "fraction": fraction,
        "rule": rule,
        "seed": seed,
        "accuracy": 0.8 + seed / 100,
        "class_recall": recalls,
        "honest_clients": {"mean": 0.8, "worst": 0.6, "p10": 0.65, "std": 0.1},
    }


def test_the_summary_shares_the_clean_runs_and_scores_the_attacked_class():
    targeted, everything = "label_flip:source=6,target=0", "label_flip"
    runs = [
        _run("fedavg", "none", 0.0, 0, 0.7),
        _run("fedavg", "none", 0.0, 1, 0.7),
        _run("fedavg", targeted, 0.2, 0, 0.1),
        _run("fedavg", targeted, 0.2, 1, 0.3),
        _run("fedavg", everything, 0.2, 0, 0.5),
        _run("fedavg", everything, 0.2, 1, 0.5),
    ]
    rows = flip_report.summarise(runs, [targeted, everything], [0.0, 0.2], ["iid"])
    by = {(r["attack"], r["fraction"]): r for r in rows}
    assert len(rows) == 4 and all(r["seeds"] == 2 for r in rows)
    assert by[targeted, 0.0]["attacked_recall"]["mean"] == pytest.approx(0.7)  # class 6
    assert by[targeted, 0.2]["attacked_recall"] == pytest.approx(
        {"mean": 0.2, "std": 0.1414}, abs=1e-4
    )
    assert by[everything, 0.0]["attacked_recall"]["mean"] == pytest.approx(0.4)  # worst class
    assert by[targeted, 0.2]["accuracy"]["mean"] == pytest.approx(0.805)


def test_a_client_label_mix_weights_the_class_recalls():
    labels = np.repeat(np.arange(3), 4)  # 4 examples of each of 3 classes
    mixes = label_mixes(labels, "shards:1", clients=3, seed=0, classes=3)
    assert sorted(map(tuple, mixes)) == [(0, 0, 1), (0, 1, 0), (1, 0, 0)]  # one class each
    assert sorted(mix_accuracies([0.9, 0.5, float("nan")], mixes)) == [0.0, 0.5, 0.9]


def test_a_study_refuses_an_app_it_cannot_score():
    with pytest.raises(ConfigError, match="lacks evaluate_on"):
        pooled_app(TEST_APP, seed=0, study="label-flipping")


def test_reports_write_tables_and_json_without_nan(tmp_path):
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    write_json(tmp_path / "r.json", {"x": [math.nan, 1.0]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": [None, 1.0]}
    run = StudyRun(Size.QUICK, seeds=(0, 1), out=tmp_path, app="my.py:make_app")
    assert command("heterogeneity", run) == (
        "strata experiment heterogeneity --quick --seeds 2 --app my.py:make_app"
    )
    assert StudyRun(Size.FULL, (0,), tmp_path).app_spec.endswith("fashion_mnist:make_app")


def test_strata_experiment_list_names_every_study():
    result = CliRunner().invoke(experiment_cli, ["list"])
    assert result.exit_code == 0
    for name in STUDIES:
        assert name in result.output


@pytest.mark.slow
@pytest.mark.timeout(600)  # about a minute each on 2 idle cores; several on a busy machine
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_heterogeneity_end_to_end(tmp_path):
    strata_succeeds("experiment", "heterogeneity", "--quick", "--out", str(tmp_path), timeout=280)
    folder = tmp_path / "heterogeneity"
    results = json.loads((folder / "results.json").read_text())
    scale = heterogeneity.SCALES[Size.QUICK]
    assert [s["partition"] for s in results["settings"]] == list(scale.partitions)
    assert set(scale.partitions) < set(heterogeneity.PARTITIONS)  # quick: the two ends
    for setting in results["settings"]:
        assert len(setting["accuracy_per_round"]) == scale.rounds
        values = [r["mean"] for r in setting["accuracy_per_round"]]
        values += [setting[key]["mean"] for key in heterogeneity.PROMISE]
        assert all(0.0 <= v <= 1.0 for v in values), setting
    iid = results["settings"][0]
    assert iid["federated_accuracy"]["mean"] > 0.5  # it learned: chance is 0.1
    assert (folder / "accuracy.png").stat().st_size > 0
    readme = (folder / "README.md").read_text()
    assert "strata experiment heterogeneity --quick --seeds 1" in readme
    assert all(f"| {p} |" in readme for p in scale.partitions)


@pytest.mark.slow
@pytest.mark.timeout(600)  # about a minute each on 2 idle cores; several on a busy machine
@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_quick_label_flipping_end_to_end(tmp_path):
    strata_succeeds("experiment", "label-flipping", "--quick", "--out", str(tmp_path), timeout=280)
    folder = tmp_path / "label-flipping"
    results = json.loads((folder / "results.json").read_text())
    scale = label_flipping.SCALES[Size.QUICK]
    expected = {
        (p, a, f, r)
        for p in scale.partitions
        for a in scale.attacks
        for f in scale.fractions
        for r in label_flipping.rules(scale)
    }
    got = {(s["partition"], s["attack"], s["fraction"], s["rule"]) for s in results["settings"]}
    assert got == expected
    for setting in results["settings"]:
        assert 0.0 <= setting["accuracy"]["mean"] <= 1.0, setting
        assert 0.0 <= setting["attacked_recall"]["mean"] <= 1.0, setting
        assert 0.0 <= setting["honest_clients"]["worst"] <= setting["honest_clients"]["mean"] <= 1
    attacked = [r for r in results["runs"] if r["fraction"] > 0]
    assert attacked and all(len(r["malicious"]) == 1 for r in attacked)
    assert all(not r["malicious"] for r in results["runs"] if r["fraction"] == 0)
    for name in ("accuracy.png", "attacked_recall.png", "README.md"):
        assert (folder / name).stat().st_size > 0
    assert "| `bulyan:f=1` |" in (folder / "README.md").read_text()


def test_label_flipping_refuses_an_app_its_clients_cannot_poison_before_any_start(tmp_path):
    run = StudyRun(Size.QUICK, seeds=(0,), out=tmp_path, app=TEST_APP)
    with pytest.raises(ConfigError, match="does not offer with_training_transform"):
        label_flipping.run(run)
    assert not (tmp_path / "label-flipping").exists()


def test_an_interrupted_study_reuses_the_federations_it_finished(tmp_path):
    calls: list[str] = []

    def federation(tag: str) -> list[dict]:
        calls.append(tag)
        return [{"rule": "fedavg", "accuracy": 0.5, "tag": tag}]

    run = StudyRun(Size.FULL, seeds=(0,), out=tmp_path)
    key = {"partition": "iid", "seed": 0}
    assert run.resumable("demo", key, lambda: federation("first"))[0]["tag"] == "first"
    calls.clear()
    again = StudyRun(Size.FULL, seeds=(0, 1), out=tmp_path)  # the rerun after a cut
    assert again.resumable("demo", key, lambda: federation("second"))[0]["tag"] == "first"
    assert calls == []  # nothing ran again
    assert again.resumable("demo", {**key, "seed": 1}, lambda: federation("other"))[0]["tag"] == (
        "other"
    )
    quick = StudyRun(Size.QUICK, seeds=(0,), out=tmp_path)  # another size is another study
    assert quick.resumable("demo", key, lambda: federation("quick"))[0]["tag"] == "quick"
    for saved in (tmp_path / "demo" / ".checkpoints").iterdir():
        saved.write_text("{not json")  # a torn file is run again, never trusted
    assert run.resumable("demo", key, lambda: federation("rerun"))[0]["tag"] == "rerun"
    run.finished("demo")
    assert not (tmp_path / "demo" / ".checkpoints").exists()
    assert run.resumable("demo", key, lambda: federation("fresh"))[0]["tag"] == "fresh"


def test_a_study_publishes_its_results_plots_and_readme_then_drops_its_checkpoints(tmp_path):
    run = StudyRun(Size.QUICK, seeds=(0,), out=tmp_path)
    run.resumable("demo", {"seed": 0}, lambda: [{"accuracy": 0.5}])
    results = {**run.described("demo"), "accuracy": math.nan}

    def plots(written: dict, folder: Path) -> None:
        assert json.loads((folder / "results.json").read_text())["accuracy"] is None  # first
        (folder / "accuracy.png").write_bytes(b"png")

    def broken(written: dict, folder: Path) -> None:
        raise RuntimeError("matplotlib fell over")

    def readme(written: dict, study: StudyRun) -> str:
        assert written is results and study is run
        return "# demo\n"

    with pytest.raises(RuntimeError, match="fell over"):
        run.publish("demo", results, broken, readme)
    assert (tmp_path / "demo" / ".checkpoints").is_dir()  # a rerun reuses the federations
    assert run.publish("demo", results, plots, readme) is results
    folder = tmp_path / "demo"
    assert (folder / "accuracy.png").read_bytes() == b"png"
    assert (folder / "README.md").read_text() == "# demo\n"
    assert not (folder / ".checkpoints").exists()
