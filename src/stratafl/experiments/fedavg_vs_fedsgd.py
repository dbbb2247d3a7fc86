"""Study 3: FedAvg against FedSGD (McMahan et al. 2017), in rounds and in bytes.

FedSGD is one gradient step per round on each client's whole data (E=1, B=∞): the
weighted mean of the clients' steps is exactly one step of full-batch gradient descent.
FedAvg (E=5, B=32) spends more computation on each client per round to need fewer rounds,
and so fewer bytes: McMahan et al.'s headline. For IID clients and for 2 label shards per
client, one federation runs both sessions from the same seed model; the study reports the
rounds each needs to reach a target test accuracy, the speedup (FedSGD's rounds over
FedAvg's) and the bytes moved until then, from the round records' traffic (both tiers,
both directions).

B=∞ is `FULL_BATCH`, the largest batch_size a session accepts: every client's data is one
batch (the app's SGD steps through its data in slices of batch_size). The round records'
example counts show it was larger than every client's data.
"""

from __future__ import annotations

import math
import time
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

NAME = "fedavg-vs-fedsgd"
PARTITIONS = ("iid", "shards:2")
FULL_BATCH = 1_000_000
"""B=∞: `SessionConfig`'s largest batch_size, more than any client here holds."""
METHODS = ("fedsgd", "fedavg")


@dataclass(frozen=True)
class Scale:
    clients: int
    combiners: int
    rounds: dict[str, int]  # per method: FedSGD needs many more
    target: float  # test accuracy both reach at this size
    lr: dict[str, float]


SCALES = {
    Size.QUICK: Scale(4, 1, {"fedsgd": 5, "fedavg": 2}, 0.5, {"fedsgd": 0.2, "fedavg": 0.05}),
    # lr 0.2 for FedSGD: of 0.2, 0.5 and 1, the fastest to 0.70 of full-batch descent in
    # a single-process check (1 oscillates). FedAvg keeps the app's default 0.05.
    Size.FULL: Scale(10, 2, {"fedsgd": 100, "fedavg": 20}, 0.7, {"fedsgd": 0.2, "fedavg": 0.05}),
}


def sessions(scale: Scale, seed: int) -> list[SessionConfig]:
    """FedSGD (E=1, B=∞) and FedAvg (E=5, B=32), in `METHODS` order."""
    shape = {"fedsgd": (1, FULL_BATCH), "fedavg": (5, 32)}
    return [
        SessionConfig(
            rounds=scale.rounds[method],
            min_clients=scale.clients,
            local_epochs=shape[method][0],
            batch_size=shape[method][1],
            learning_rate=scale.lr[method],
            seed=seed,
        )
        for method in METHODS
    ]


def rounds_to(target: float, accuracies: list[float | None]) -> int | None:
    """The first round (1-based) whose test accuracy reaches ``target``; None if none does."""
    for number, accuracy in enumerate(accuracies, start=1):
        if accuracy is not None and accuracy >= target:
            return number
    return None


def run(study: StudyRun) -> dict[str, Any]:
    """Both methods on every split with every seed; write results.json, plots, README.md."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    scale = SCALES[study.size]
    started = time.monotonic()
    runs = []
    for partition in PARTITIONS:
        for seed in study.seeds:
            began = time.monotonic()
            spec = FederationSpec(
                app=study.app_spec,
                clients=scale.clients,
                combiners=scale.combiners,
                partition=partition,
                seed=seed,
            )
            for method, result in zip(
                METHODS, run_sessions(spec, sessions(scale, seed)), strict=True
            ):
                accuracies = [r.accuracy for r in result.rounds]
                moved = [r.bytes_up + r.bytes_down for r in result.rounds]
                reached = rounds_to(scale.target, accuracies)
                runs.append(
                    {
                        "partition": partition,
                        "seed": seed,
                        "method": method,
                        "accuracy_per_round": accuracies,
                        "bytes_per_round": moved,
                        "rounds_to_target": reached,
                        "bytes_to_target": sum(moved[:reached]) if reached else None,
                        "largest_client": max(
                            (o["num_examples"] for r in result.rounds for o in r.outcomes),
                            default=0,
                        ),
                    }
                )
            study.log(f"{NAME}: {partition} seed {seed} ({time.monotonic() - began:.0f} s)")
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "target": scale.target,
        "methods": {
            m: c.model_dump(include={"rounds", "local_epochs", "batch_size", "learning_rate"})
            for m, c in zip(METHODS, sessions(scale, 0), strict=True)
        },
        "settings": [_summary(partition, runs) for partition in PARTITIONS],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plot, _readme)


def _number(value: int | None) -> float:
    return math.nan if value is None else float(value)


def _summary(partition: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"partition": partition}
    for method in METHODS:
        mine = [r for r in runs if r["partition"] == partition and r["method"] == method]
        per_round = zip(*(r["accuracy_per_round"] for r in mine), strict=True)
        summary[method] = {
            "accuracy_per_round": [
                mean_std([math.nan if a is None else float(a) for a in accs]) for accs in per_round
            ],
            "rounds_to_target": mean_std([_number(r["rounds_to_target"]) for r in mine]),
            "reached": sum(r["rounds_to_target"] is not None for r in mine),
            "bytes_to_target": mean_std([_number(r["bytes_to_target"]) for r in mine]),
            "bytes_per_round": mean_std([float(b) for r in mine for b in r["bytes_per_round"]]),
            "largest_client": max(r["largest_client"] for r in mine),
        }
    pairs = {r["seed"]: r for r in runs if r["partition"] == partition and r["method"] == "fedavg"}
    summary["speedup"] = mean_std(
        [
            _number(r["rounds_to_target"]) / _number(pairs[r["seed"]]["rounds_to_target"])
            for r in runs
            if r["partition"] == partition and r["method"] == "fedsgd"
        ]
    )
    return summary


def _plot(results: dict[str, Any], folder: Path) -> None:
    figure = new_figure(1, len(results["settings"]), width=5.0, height=3.6)
    for axes, setting in zip(figure.axes, results["settings"], strict=True):
        for method in METHODS:
            per_round = setting[method]["accuracy_per_round"]
            axes.errorbar(
                range(1, len(per_round) + 1),
                [s["mean"] for s in per_round],
                yerr=[s["std"] for s in per_round],
                capsize=2,
                label=method,
            )
        axes.axhline(results["target"], ls="--", c="grey", label="target")
        axes.set(xlabel="round", ylabel="test accuracy", title=setting["partition"])
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, folder / "accuracy.png")


def _reached(stats: dict[str, Any], seeds: int, rounds: int) -> str:
    if stats["reached"] == 0:
        return f"not in {rounds}"
    cell = pm(stats["rounds_to_target"], 1)
    return cell if stats["reached"] == seeds else f"{cell} ({stats['reached']} of {seeds} seeds)"


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    methods, seeds = results["methods"], len(results["seeds"])
    rows = []
    for s in results["settings"]:
        row = [s["partition"]]
        for m in METHODS:
            row.append(_reached(s[m], seeds, methods[m]["rounds"]))
        for m in METHODS:
            row.append(pm({k: v / 1e6 for k, v in s[m]["bytes_to_target"].items()}, 1))
        row.append(pm(s["speedup"], 1))
        row.append(f"{s['fedsgd']['bytes_per_round']['mean'] / 1e6:.2f}")
        rows.append(row)
    headers = [
        "partition",
        "FedSGD rounds",
        "FedAvg rounds",
        "FedSGD MB to target",
        "FedAvg MB to target",
        "speedup (rounds)",
        "MB per round",
    ]
    sgd, avg = methods["fedsgd"], methods["fedavg"]
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} clients over {results['combiners']} combiner(s), app "
            f"`{results['app']}`, seeds {results['seeds']}. FedSGD: E=1, B=∞ (batch "
            f"{sgd['batch_size']:,}, the largest client held "
            f"{max(s['fedsgd']['largest_client'] for s in results['settings']):,} examples), "
            f"lr {sgd['learning_rate']:g}, up to {sgd['rounds']} rounds. FedAvg: "
            f"E={avg['local_epochs']}, B={avg['batch_size']}, lr {avg['learning_rate']:g}, up "
            f"to {avg['rounds']} rounds. Rounds to reach **{results['target']:g}** test "
            "accuracy (the first round whose model scores it), the bytes both tiers moved "
            "in both directions until then, and the speedup (FedSGD's rounds / FedAvg's), "
            "mean ± std over seeds. Both send a whole model each way per round, so the "
            "bytes per round are the same and the saving in bytes is the speedup.",
            "",
            QUICK_NOTE if study.size is Size.QUICK else "",
            markdown_table(headers, rows),
            "",
            "![accuracy per round](accuracy.png)",
            "",
        ]
    )


STUDY = Study(
    name=NAME,
    title="FedAvg against FedSGD: rounds and bytes to a target accuracy",
    run=run,
)
