"""Study 7: what each robust rule costs when nobody attacks, from IID to label shards.

A robust rule throws information away (Krum keeps one update, the median ignores the
spread, trimming drops the tails, clipping shortens honest steps), and on non-IID
clients the honest updates it discards are the ones that look different: the clients
whose data differs. For each split, one federation of honest clients runs one session per
rule, each from the same seed model, with the rule specs of the label-flipping study
(`label_flipping.rules`, tuned for its attackers, as a defender would deploy them), so the
two studies' numbers compare. Each final model is scored on the whole test set and, per
client, on that client's own label mix (`evaluation.mix_accuracies`): mean, worst, 10th
percentile and spread over the clients.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.data import parse_partitioner
from stratafl.experiments import label_flipping
from stratafl.experiments.evaluation import class_recalls, label_mixes, mix_accuracies, pooled_app
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.study import (
    QUICK_NOTE,
    Size,
    Study,
    StudyRun,
    command,
    mean_std,
    pm,
    spread,
    timed,
)
from stratafl.settings import SessionConfig

NAME = "defence-cost"
PARTITIONS = {
    Size.QUICK: ("iid", "shards:2"),  # the two ends: the quick size stays about a minute
    Size.FULL: ("iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"),
}
CLASSES = 10
FAIRNESS = ("mean", "worst", "p10", "std")
SCALES = label_flipping.SCALES
"""The label-flipping study's clients, rounds and rule tuning, so the numbers compare."""


def run(study: StudyRun) -> dict[str, Any]:
    """Every rule on every split with every seed; write results.json, plots, README.md."""
    scale, partitions = SCALES[study.size], PARTITIONS[study.size]
    for partition in partitions:
        parse_partitioner(partition)
    pooled_app(study.app_spec, study.seeds[0], NAME)  # an app it cannot score fails first
    started = time.monotonic()
    runs = []
    for partition in partitions:
        for seed in study.seeds:
            runs += study.resumable(
                NAME,
                {"partition": partition, "seed": seed},
                partial(_federation, study, partition, seed),
            )
    rules = label_flipping.rules(scale)
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": 1,
        "rounds": scale.rounds,
        "partitions": list(partitions),
        "rules": rules,
        "settings": [_summary(p, rule, runs) for p in partitions for rule in rules],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plot, _readme)


def _federation(study: StudyRun, partition: str, seed: int) -> list[dict[str, Any]]:
    """One federation of honest clients, one session per rule; a record per rule."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    scale = SCALES[study.size]
    began = time.monotonic()
    spec = FederationSpec(
        app=study.app_spec, clients=scale.clients, combiners=1, partition=partition, seed=seed
    )
    sessions = [
        SessionConfig(rounds=scale.rounds, min_clients=scale.clients, aggregator=rule, seed=seed)
        for rule in label_flipping.rules(scale)
    ]
    app = pooled_app(study.app_spec, seed, NAME)
    x_test, y_test = app.test_data()
    mixes = label_mixes(app.train_labels(), partition, scale.clients, seed, CLASSES)
    records = []
    for result in run_sessions(spec, sessions):
        recalls = class_recalls(app, result.final, CLASSES)
        records.append(
            {
                "partition": partition,
                "seed": seed,
                "rule": result.config.aggregator,
                "accuracy": float(app.evaluate_on(result.final, x_test, y_test)["accuracy"]),
                "accuracy_per_round": [r.accuracy for r in result.rounds],
                "class_recall": recalls,
                "clients": spread(mix_accuracies(recalls, mixes)),
            }
        )
    study.log(
        f"{NAME}: {partition} seed {seed}: {len(records)} rules ({time.monotonic() - began:.0f} s)"
    )
    return records


def _summary(partition: str, rule: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = {r["seed"]: r for r in runs if r["partition"] == partition and r["rule"] == rule}
    fedavg = {r["seed"]: r for r in runs if r["partition"] == partition and r["rule"] == "fedavg"}
    return {
        "partition": partition,
        "rule": rule,
        "seeds": len(mine),
        "accuracy": mean_std([r["accuracy"] for r in mine.values()]),
        "vs_fedavg": mean_std([r["accuracy"] - fedavg[s]["accuracy"] for s, r in mine.items()]),
        "clients": {key: mean_std([r["clients"][key] for r in mine.values()]) for key in FAIRNESS},
    }


def _plot(results: dict[str, Any], folder: Path) -> None:
    figure = new_figure(width=7.0, height=4.0)
    (axes,) = figure.axes
    partitions, rules = results["partitions"], results["rules"]
    width = 0.8 / len(rules)
    for index, rule in enumerate(rules):
        rows = [_row(results, p, rule) for p in partitions]
        axes.bar(
            [p + (index - (len(rules) - 1) / 2) * width for p in range(len(partitions))],
            [r["accuracy"]["mean"] for r in rows],
            width,
            yerr=[r["accuracy"]["std"] for r in rows],
            label=rule.split(":")[0],
        )
    axes.set_xticks(range(len(partitions)), partitions)
    axes.set(ylabel="test accuracy (no attacker)", title="Each rule's accuracy by data split")
    axes.grid(alpha=0.3, axis="y")
    figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    save_figure(figure, folder / "accuracy.png")


def _row(results: dict[str, Any], partition: str, rule: str) -> dict[str, Any]:
    return next(r for r in results["settings"] if r["partition"] == partition and r["rule"] == rule)


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    partitions = results["partitions"]
    rows = []
    for rule in results["rules"]:
        cells = [_row(results, p, rule) for p in partitions]
        rows.append(
            [f"`{rule}`"] + [f"{pm(c['accuracy'])} ({c['vs_fedavg']['mean']:+.3f})" for c in cells]
        )
    fairness = [
        [f"`{r['rule']}`", r["partition"]] + [f"{r['clients'][k]['mean']:.3f}" for k in FAIRNESS]
        for r in results["settings"]
    ]
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} honest clients on one combiner, {results['rounds']} rounds, "
            f"app `{results['app']}`, seeds {results['seeds']}. The rules are the "
            "label-flipping study's specs (tuned for its attackers). Each cell: test accuracy, "
            "mean ± std over seeds, and in brackets its difference to FedAvg's on the same "
            "clients (mean over seeds of the per-seed differences).",
            "",
            QUICK_NOTE if study.size is Size.QUICK else "",
            markdown_table(["rule", *partitions], rows),
            "",
            "## How the final model serves each client",
            "",
            "Each client's expected accuracy on test data with its own label mix (the "
            "per-class recalls weighted by its training labels), over all clients: mean, "
            "worst, 10th percentile, standard deviation (means over seeds).",
            "",
            markdown_table(["rule", "split", *FAIRNESS], fairness),
            "",
            "![accuracy by split](accuracy.png)",
            "",
        ]
    )


STUDY = Study(
    name=NAME,
    title="The cost of each defence with no attacker: accuracy and per-client fairness",
    run=run,
)
