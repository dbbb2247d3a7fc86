"""Study 1: what non-IID data costs FedAvg, against the promise check's two baselines.

Five ways to split the data over the clients, from IID to McMahan et al.'s pathological
2 label shards per client, with Dirichlet label skew in between (Hsu et al. 2019). Each is
one `strata run` (`run_federation`, with the promise check's baselines): accuracy per
round, and the final federated model against the same model trained on the pooled data
with the same epoch budget, and against the best and the mean client training alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.study import (
    QUICK_NOTE,
    Size,
    Study,
    StudyRun,
    command,
    mean_std,
    pm,
    timed,
)
from stratafl.settings import SessionConfig

NAME = "heterogeneity"
PARTITIONS = ("iid", "dirichlet:1", "dirichlet:0.5", "dirichlet:0.1", "shards:2")
PROMISE = ("federated_accuracy", "centralized_accuracy", "client_alone_best", "client_alone_mean")


@dataclass(frozen=True)
class Scale:
    clients: int
    combiners: int
    rounds: int
    partitions: tuple[str, ...] = PARTITIONS


SCALES = {
    # quick: the two ends of the range only; every split runs the same code path
    Size.QUICK: Scale(clients=4, combiners=1, rounds=3, partitions=("iid", "shards:2")),
    Size.FULL: Scale(10, 2, 20),
}


def run(study: StudyRun) -> dict[str, Any]:
    """Run every partition with every seed; write results.json, accuracy.png, README.md."""
    scale = SCALES[study.size]
    started = time.monotonic()
    runs = promise_runs(study, scale, scale.partitions, NAME)
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "rounds": scale.rounds,
        "session": SessionConfig(rounds=scale.rounds).model_dump(
            include={"local_epochs", "batch_size", "learning_rate", "aggregator"}
        ),
        "settings": [_summary(partition, runs) for partition in scale.partitions],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plot, _readme)


def promise_runs(
    study: StudyRun, scale: Scale, partitions: Sequence[str], name: str
) -> list[dict[str, Any]]:
    """One `strata run` with the promise check's baselines per partition and seed: its
    accuracy per round and its promise check (shared with the shared-data study)."""
    from stratafl.launch.federation import FederationSpec  # the tiers' modules: only when running
    from stratafl.launch.run import run_federation

    runs = []
    for partition in partitions:
        for seed in study.seeds:
            began = time.monotonic()
            spec = FederationSpec(
                app=study.app_spec,
                clients=scale.clients,
                combiners=scale.combiners,
                partition=partition,
                seed=seed,
            )
            session = SessionConfig(rounds=scale.rounds, min_clients=scale.clients, seed=seed)
            report = run_federation(spec, session, baselines=True)
            assert report.promise is not None  # baselines=True
            runs.append(
                {
                    "partition": partition,
                    "seed": seed,
                    "accuracy_per_round": [r.accuracy for r in report.rounds],
                    "promise": report.promise.to_dict(),
                    "seconds": time.monotonic() - began,
                }
            )
            study.log(
                f"{name}: {partition} seed {seed}: federated "
                f"{report.promise.federated_accuracy:.3f} ({time.monotonic() - began:.0f} s)"
            )
    return runs


def _summary(partition: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in runs if r["partition"] == partition]
    per_round = zip(*(r["accuracy_per_round"] for r in mine), strict=True)
    summary: dict[str, Any] = {
        "partition": partition,
        "accuracy_per_round": [mean_std([float(a) for a in accs]) for accs in per_round],
    }
    for key in (*PROMISE, "gap_to_centralized", "gain_over_best_client"):
        summary[key] = mean_std([r["promise"][key] for r in mine])
    return summary


def _plot(results: dict[str, Any], folder: Path) -> None:
    figure = new_figure()
    (axes,) = figure.axes
    for setting in results["settings"]:
        rounds = range(1, len(setting["accuracy_per_round"]) + 1)
        means = [s["mean"] for s in setting["accuracy_per_round"]]
        stds = [s["std"] for s in setting["accuracy_per_round"]]
        axes.errorbar(rounds, means, yerr=stds, marker="o", capsize=3, label=setting["partition"])
    axes.set(xlabel="round", ylabel="test accuracy", title="FedAvg by data split")
    axes.set_xticks(range(1, results["rounds"] + 1))
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, folder / "accuracy.png")


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    session = results["session"]
    rows = [
        [
            s["partition"],
            pm(s["federated_accuracy"]),
            pm(s["centralized_accuracy"]),
            pm(s["gap_to_centralized"]),
            pm(s["client_alone_best"]),
            pm(s["client_alone_mean"]),
        ]
        for s in results["settings"]
    ]
    table = markdown_table(
        ["partition", "federated", "pooled", "gap", "best client alone", "mean client alone"],
        rows,
    )
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} clients over {results['combiners']} combiner(s), "
            f"{results['rounds']} rounds of FedAvg ({session['local_epochs']} local epoch(s), "
            f"batch {session['batch_size']}, lr {session['learning_rate']:g}), "
            f"app `{results['app']}`, seeds {results['seeds']}. Accuracy on the app's test "
            "set; mean ± standard deviation over seeds. The baselines train the same model "
            "with the same budget of epochs: on the pooled data, and on each client's data "
            "alone.",
            "",
            QUICK_NOTE if study.size is Size.QUICK else "",
            table,
            "",
            "![accuracy per round](accuracy.png)",
            "",
        ]
    )


STUDY = Study(
    name=NAME,
    title="Heterogeneity: FedAvg from IID to label-sharded clients",
    run=run,
)
