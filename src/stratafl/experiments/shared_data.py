"""Study 2: a small globally shared dataset against label skew (Zhao et al. 2018).

Zhao et al. show that FedAvg's loss on skewed clients comes from the divergence of their
weights, and that a small shared dataset every client also trains on recovers much of
it. In the two most skewed splits of study 1 (2 label shards per client, Dirichlet 0.1),
each federation runs once as is and once with every client also holding the same shared
subset (the partition suffix ``+shared:F``, `stratafl.data.partition.WithShared`: drawn
once from the training data from the seed, per class in proportion, and taken out of
what is split, so the pooled baseline is the same data). Each run is one `strata run`
with the promise check; the headline is the share of the gap to pooled that sharing
recovers: (federated with sharing - without) / (pooled - federated without).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stratafl.data import parse_partitioner
from stratafl.experiments import heterogeneity
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

NAME = "shared-data"
BASES = ("shards:2", "dirichlet:0.1")
QUICK_BASES = BASES[:1]
"""The quick size shares data on the sharper split only: the same code path, half the runs."""
SHARED_FRACTION = 0.05
"""Zhao et al.'s 5 %: the fraction of the training data every client shares."""
PROMISE = ("federated_accuracy", "centralized_accuracy", "client_alone_best", "client_alone_mean")

SCALES = heterogeneity.SCALES  # the same federations, so the two studies compare


def bases(size: Size) -> tuple[str, ...]:
    """The splits run without and with shared data at ``size``."""
    return QUICK_BASES if size is Size.QUICK else BASES


def with_shared(base: str, fraction: float) -> str:
    """``base`` with every client also holding ``fraction`` of the data, shared."""
    return f"{base}+shared:{fraction:g}"


def run(study: StudyRun, fraction: float = SHARED_FRACTION) -> dict[str, Any]:
    """Each base split without and with a shared ``fraction``, every seed; write
    results.json, accuracy.png, README.md."""
    scale = SCALES[study.size]
    partitions = [p for base in bases(study.size) for p in (base, with_shared(base, fraction))]
    for partition in partitions:  # a bad fraction fails here, before any process starts
        parse_partitioner(partition)
    started = time.monotonic()
    runs = heterogeneity.promise_runs(study, scale, partitions, NAME)
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "rounds": scale.rounds,
        "shared_fraction": fraction,
        "session": SessionConfig(rounds=scale.rounds).model_dump(
            include={"local_epochs", "batch_size", "learning_rate", "aggregator"}
        ),
        "settings": [
            _summary(base, with_shared(base, fraction), runs) for base in bases(study.size)
        ],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plot, _readme)


def recovered(plain: float, shared: float, pooled: float) -> float:
    """The share of the gap to pooled that sharing closes (NaN when there is no gap)."""
    gap = pooled - plain
    return (shared - plain) / gap if gap > 0 else float("nan")


def _summary(base: str, shared: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_seed = {
        (r["partition"], r["seed"]): r["promise"] for r in runs if r["partition"] in (base, shared)
    }
    seeds = sorted({seed for _, seed in by_seed})
    summary: dict[str, Any] = {"partition": base, "shared_partition": shared}
    for label, partition in (("without", base), ("with", shared)):
        mine = [r for r in runs if r["partition"] == partition]
        per_round = zip(*(r["accuracy_per_round"] for r in mine), strict=True)
        summary[label] = {
            "accuracy_per_round": [mean_std([float(a) for a in accs]) for accs in per_round],
            **{key: mean_std([r["promise"][key] for r in mine]) for key in PROMISE},
            "gap_to_centralized": mean_std([r["promise"]["gap_to_centralized"] for r in mine]),
        }
    summary["gap_recovered"] = mean_std(
        [
            recovered(
                by_seed[base, s]["federated_accuracy"],
                by_seed[shared, s]["federated_accuracy"],
                by_seed[base, s]["centralized_accuracy"],
            )
            for s in seeds
        ]
    )
    return summary


def _plot(results: dict[str, Any], folder: Path) -> None:
    figure = new_figure(1, len(results["settings"]), width=5.0, height=3.6)
    for axes, setting in zip(figure.axes, results["settings"], strict=True):
        for label in ("without", "with"):
            per_round = setting[label]["accuracy_per_round"]
            axes.errorbar(
                range(1, len(per_round) + 1),
                [s["mean"] for s in per_round],
                yerr=[s["std"] for s in per_round],
                marker="o",
                capsize=3,
                label=f"{label} shared data",
            )
        axes.axhline(
            setting["without"]["centralized_accuracy"]["mean"], ls="--", c="grey", label="pooled"
        )
        axes.set(xlabel="round", ylabel="test accuracy", title=setting["partition"])
        axes.set_xticks(range(1, results["rounds"] + 1))
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, folder / "accuracy.png")


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    session, share = results["session"], f"{100 * results['shared_fraction']:g} %"
    rows = [
        [
            s["partition"],
            pm(s["without"]["federated_accuracy"]),
            pm(s["with"]["federated_accuracy"]),
            pm(s["without"]["centralized_accuracy"]),
            pm(s["gap_recovered"], 2),
            pm(s["without"]["client_alone_best"]),
            pm(s["with"]["client_alone_best"]),
        ]
        for s in results["settings"]
    ]
    headers = [
        "partition",
        "federated",
        f"federated + {share} shared",
        "pooled",
        "gap recovered",
        "best client alone",
        "best client alone + shared",
    ]
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} clients over {results['combiners']} combiner(s), "
            f"{results['rounds']} rounds of FedAvg ({session['local_epochs']} local epoch(s), "
            f"batch {session['batch_size']}, lr {session['learning_rate']:g}), app "
            f"`{results['app']}`, seeds {results['seeds']}. With sharing, every client also "
            f"trains on the same {share} of the training data (partition "
            f"`{results['settings'][0]['shared_partition']}` and alike): drawn once per seed, "
            "per class in proportion, and left out of the split, so the pooled baseline holds "
            "the same examples either way. *Gap recovered* = (federated with sharing - "
            "without) / (pooled - federated without), per seed. Test accuracy, mean ± "
            "standard deviation over seeds; the clients-alone baselines hold the shared data "
            "too when there is any.",
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
    title="Shared data: how much of the gap to pooled a small shared set recovers",
    run=run,
)
