"""Study 11: closing the non-IID gap: drift correction and server optimisers against FedAvg.

On label-skewed clients each local model drifts towards its own labels, and FedAvg averages
the drift into the global model. Four families of fixes, each a session setting a user can
choose: a proximal term that keeps local models near the global one (FedProx, Li et al.
2020), server momentum (FedAvgM, Hsu et al. 2019), an adaptive server step (FedAdam, Reddi
et al. 2021, at two server learning rates: the tuning), and control variates that subtract
each client's drift from its steps (SCAFFOLD, Karimireddy et al. 2020); SCAFFOLD with server
momentum, and both with a larger client learning rate (the same epochs, bigger steps); a
dynamic regulariser that aligns the clients' optima with the global one (FedDyn, Acar et
al. 2021, at two strengths alpha); and, outside the epoch budget, simply more local epochs.
For each split and seed one federation (2 combiners, so the control variates and FedDyn's
h cross the hierarchy) runs one session per variant from the same seed model; the gap is to
the same model trained on the pooled data with FedAvg's budget of epochs (the promise
check's baseline), per seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.client.app import ClientContext
from stratafl.data import parse_partitioner
from stratafl.experiments.evaluation import pooled_app
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.poisoning import plot_per_round
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

NAME = "drift-correction"


@dataclass(frozen=True)
class Variant:
    """One session setting: a label for the tables and what it changes from FedAvg's."""

    label: str
    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def same_budget(self) -> bool:
        """True if it trains as many local epochs as FedAvg (a fair comparison)."""
        return "local_epochs" not in self.changes


MOMENTUM = "fedavgm:server_lr=1,momentum=0.9"
"""Server momentum as Hsu et al. 2019 run it (beta 0.9)."""

VARIANTS = (
    Variant("fedavg"),
    Variant("fedprox mu=0.01", {"proximal_mu": 0.01}),
    Variant("fedprox mu=0.1", {"proximal_mu": 0.1}),
    Variant("fedavgm", {"aggregator": MOMENTUM}),
    Variant("fedadam lr=0.003", {"aggregator": "fedadam:server_lr=0.003"}),
    Variant("fedadam lr=0.01", {"aggregator": "fedadam:server_lr=0.01"}),
    Variant("scaffold", {"drift_correction": "scaffold"}),
    Variant("scaffold+fedavgm", {"drift_correction": "scaffold", "aggregator": MOMENTUM}),
    Variant("fedavgm lr=0.1", {"aggregator": MOMENTUM, "learning_rate": 0.1}),
    Variant(
        "scaffold+fedavgm lr=0.1",
        {"drift_correction": "scaffold", "aggregator": MOMENTUM, "learning_rate": 0.1},
    ),
    Variant("feddyn alpha=0.01", {"drift_correction": "feddyn", "feddyn_alpha": 0.01}),
    Variant("feddyn alpha=0.1", {"drift_correction": "feddyn", "feddyn_alpha": 0.1}),
    Variant("fedavg E=2", {"local_epochs": 2}),
)


@dataclass(frozen=True)
class Scale:
    clients: int
    combiners: int
    rounds: int
    partitions: tuple[str, ...]
    variants: tuple[Variant, ...] = VARIANTS


SCALES = {
    # The quick size keeps CI short: FedAvg, momentum, SCAFFOLD and FedDyn cover every path.
    Size.QUICK: Scale(
        4, 2, 3, ("shards:2",), (VARIANTS[0], VARIANTS[3], VARIANTS[6], VARIANTS[10])
    ),
    Size.FULL: Scale(10, 2, 20, ("dirichlet:0.5", "dirichlet:0.1", "shards:2")),
}


def sessions(scale: Scale, seed: int) -> list[SessionConfig]:
    """One session per variant (checked here, so a bad variant fails before any start)."""
    base = {"rounds": scale.rounds, "min_clients": scale.clients, "seed": seed}
    return [SessionConfig(**{**base, **v.changes}) for v in scale.variants]


def run(study: StudyRun) -> dict[str, Any]:
    """Every variant on every split with every seed; write results.json, plots, README.md."""
    scale = SCALES[study.size]
    for partition in scale.partitions:
        parse_partitioner(partition)
    sessions(scale, study.seeds[0])
    pooled_app(study.app_spec, study.seeds[0], NAME)  # an app it cannot score fails first
    started = time.monotonic()
    pooled = {seed: _pooled_accuracy(study, scale, seed) for seed in study.seeds}
    runs = []
    for partition in scale.partitions:
        for seed in study.seeds:
            runs += study.resumable(
                NAME,
                {"partition": partition, "seed": seed, "pooled": pooled[seed]},
                partial(_federation, study, scale, partition, seed, pooled[seed]),
            )
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "rounds": scale.rounds,
        "partitions": list(scale.partitions),
        "variants": [{"label": v.label, "changes": v.changes} for v in scale.variants],
        "pooled": mean_std(list(pooled.values())),
        "settings": [_summary(p, v, runs) for p in scale.partitions for v in scale.variants],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plots, _readme)


def _pooled_accuracy(study: StudyRun, scale: Scale, seed: int) -> float:
    """The promise check's pooled baseline: FedAvg's budget of epochs on all the data."""
    from stratafl.launch.report import baseline_accuracy  # trains a model: only when running

    fedavg = SessionConfig(rounds=scale.rounds, seed=seed)
    config = {**fedavg.task_config(0), "epochs": scale.rounds * fedavg.local_epochs}
    context = ClientContext(client_id="pooled", num_partitions=1, seed=seed)
    accuracy = baseline_accuracy(study.app_spec, context, seed, config)
    study.log(f"{NAME}: pooled seed {seed}: {accuracy:.3f}")
    return accuracy


def _federation(
    study: StudyRun, scale: Scale, partition: str, seed: int, pooled: float
) -> list[dict[str, Any]]:
    """One federation, one session per variant; a record per variant."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    began = time.monotonic()
    spec = FederationSpec(
        app=study.app_spec,
        clients=scale.clients,
        combiners=scale.combiners,
        partition=partition,
        seed=seed,
    )
    scorer = pooled_app(study.app_spec, seed, NAME)
    x_test, y_test = scorer.test_data()
    records = []
    results = run_sessions(spec, sessions(scale, seed))
    for variant, result in zip(scale.variants, results, strict=True):
        accuracy = float(scorer.evaluate_on(result.final, x_test, y_test)["accuracy"])
        records.append(
            {
                "partition": partition,
                "seed": seed,
                "variant": variant.label,
                "accuracy": accuracy,
                "gap_to_pooled": pooled - accuracy,
                "accuracy_per_round": [r.accuracy for r in result.rounds],
                "megabytes": sum(r.bytes_up + r.bytes_down for r in result.rounds) / 1e6,
            }
        )
    study.log(
        f"{NAME}: {partition} seed {seed}: {len(records)} variants "
        f"({time.monotonic() - began:.0f} s)"
    )
    return records


def _summary(partition: str, variant: Variant, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = {
        r["seed"]: r for r in runs if r["partition"] == partition and r["variant"] == variant.label
    }
    fedavg = {
        r["seed"]: r for r in runs if r["partition"] == partition and r["variant"] == "fedavg"
    }
    per_round = zip(*(r["accuracy_per_round"] for r in mine.values()), strict=True)
    return {
        "partition": partition,
        "variant": variant.label,
        "same_budget": variant.same_budget,
        "seeds": len(mine),
        "accuracy": mean_std([r["accuracy"] for r in mine.values()]),
        "gap_to_pooled": mean_std([r["gap_to_pooled"] for r in mine.values()]),
        "vs_fedavg": mean_std([r["accuracy"] - fedavg[s]["accuracy"] for s, r in mine.items()]),
        "megabytes": mean_std([r["megabytes"] for r in mine.values()]),
        "accuracy_per_round": [mean_std([float(a) for a in accs]) for accs in per_round],
    }


def best(results: dict[str, Any], partition: str) -> dict[str, Any]:
    """The variant with the highest mean accuracy on ``partition`` within FedAvg's budget."""
    rows = [s for s in results["settings"] if s["partition"] == partition and s["same_budget"]]
    return max(rows, key=lambda s: s["accuracy"]["mean"])


def _plots(results: dict[str, Any], folder: Path) -> None:
    _plot(results, folder / "accuracy.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    partitions = results["partitions"]
    figure = new_figure(1, len(partitions), width=5.5, height=4.0)
    for axes, partition in zip(figure.axes, partitions, strict=True):
        rows = [s for s in results["settings"] if s["partition"] == partition]
        axes.set_prop_cycle(color=_colours(len(rows)))
        plot_per_round(axes, rows, "accuracy_per_round", lambda row: row["variant"])
        axes.axhline(results["pooled"]["mean"], color="black", linestyle="--", label="pooled")
        axes.set(xlabel="round", ylabel="test accuracy", title=partition)
    figure.legend(*figure.axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=5)
    save_figure(figure, path)


def _colours(count: int) -> list[Any]:
    """One distinct colour per variant (matplotlib's default cycle repeats after ten)."""
    from matplotlib import colormaps

    return [colormaps["tab20"](i / max(1, count - 1) * 0.999) for i in range(count)]


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    partitions = results["partitions"]
    cells = {(s["partition"], s["variant"]): s for s in results["settings"]}
    rows = [
        [f"`{v['label']}`"]
        + [
            f"{pm(cells[p, v['label']]['accuracy'])} "
            f"(gap {cells[p, v['label']]['gap_to_pooled']['mean']:.3f}, "
            f"{cells[p, v['label']]['vs_fedavg']['mean']:+.3f})"
            for p in partitions
        ]
        for v in results["variants"]
    ]
    winners = [
        f"- {p}: `{best(results, p)['variant']}` at {pm(best(results, p)['accuracy'])}, "
        f"{best(results, p)['gap_to_pooled']['mean'] * 100:.1f} points below pooled "
        f"(FedAvg: {cells[p, 'fedavg']['gap_to_pooled']['mean'] * 100:.1f})"
        for p in partitions
    ]
    changes = [f"- `{v['label']}`: {v['changes'] or 'FedAvg as is'}" for v in results["variants"]]
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} clients over {results['combiners']} combiners, "
            f"{results['rounds']} rounds, app `{results['app']}`, seeds {results['seeds']}. "
            f"Pooled baseline (FedAvg's budget of epochs on all the data): "
            f"{pm(results['pooled'])}. Each cell: test accuracy, mean ± std over seeds; in "
            "brackets the gap to pooled and the difference to FedAvg on the same clients.",
            "",
            QUICK_NOTE if study.size is Size.QUICK else "",
            markdown_table(["variant", *partitions], rows),
            "",
            "Best within FedAvg's budget of epochs (`fedavg E=2` trains twice as much):",
            "",
            *winners,
            "",
            "The variants (session settings, see docs/configuration.md):",
            "",
            *changes,
            "",
            "![accuracy per round](accuracy.png)",
            "",
        ]
    )


STUDY = Study(
    name=NAME,
    title="Drift correction: SCAFFOLD, FedDyn, FedProx and server optimisers on non-IID clients",
    run=run,
)
