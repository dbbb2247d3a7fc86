"""The label-flipping study's summary over seeds, its plots and its README table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stratafl.attacks import LabelFlip, parse_attack
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.study import QUICK_NOTE, Size, StudyRun, command, mean_std, pm

CLEAN = "none"
"""The attack of the clean baseline (no malicious client), shared by every attack's 0 %."""
FAIRNESS = ("mean", "worst", "p10", "std")


def attacked_class(attack: str) -> int | None:
    """The class whose recall shows the attack: the source of a targeted flip; None for the
    all-labels flip, where every class is attacked and the worst one is reported."""
    flip = parse_attack(attack)
    return flip.source if isinstance(flip, LabelFlip) else None


def attacked_recall(recalls: list[float], attack: str) -> float:
    source = attacked_class(attack)
    if source is not None:
        return recalls[source]
    return min((r for r in recalls if not math.isnan(r)), default=math.nan)


def summarise(
    runs: list[dict[str, Any]],
    attacks: Sequence[str],
    fractions: Sequence[float],
    partitions: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per (partition, attack, fraction, rule), mean and std over seeds; the 0 %
    rows of every attack come from the same clean runs, scored for that attack's class."""
    rules = list(dict.fromkeys(r["rule"] for r in runs))
    rows = []
    for partition in partitions:
        for attack in attacks:
            for fraction in fractions:
                for rule in rules:
                    mine = [
                        r
                        for r in runs
                        if r["partition"] == partition
                        and r["rule"] == rule
                        and r["fraction"] == fraction
                        and r["attack"] == (attack if fraction > 0 else CLEAN)
                    ]
                    rows.append(
                        {
                            "partition": partition,
                            "attack": attack,
                            "fraction": fraction,
                            "rule": rule,
                            "seeds": len(mine),
                            "accuracy": mean_std([r["accuracy"] for r in mine]),
                            "attacked_recall": mean_std(
                                [attacked_recall(r["class_recall"], attack) for r in mine]
                            ),
                            "honest_clients": {
                                key: mean_std([r["honest_clients"][key] for r in mine])["mean"]
                                for key in FAIRNESS
                            },
                        }
                    )
    return rows


def plots(results: dict[str, Any], folder: Path) -> None:
    """accuracy.png and attacked_recall.png into ``folder``."""
    for metric, label in (("accuracy", "clean accuracy"), ("attacked_recall", "attacked recall")):
        _plot(results, metric, label, folder / f"{metric}.png")


def readme(title: str) -> Callable[[dict[str, Any], StudyRun], str]:
    """The README of a label-flipping study called ``title``, for `StudyRun.publish`."""
    return lambda results, study: _readme(results, study, title)


def _plot(results: dict[str, Any], metric: str, label: str, path: Path) -> None:
    attacks, partitions = results["attacks"], results["partitions"]
    figure = new_figure(len(attacks), len(partitions), width=5.0, height=3.6)
    for index, (attack, partition) in enumerate((a, p) for a in attacks for p in partitions):
        axes = figure.axes[index]
        for rule in results["rules"]:
            rows = _rows(results, partition, attack, rule)
            axes.errorbar(
                [100 * r["fraction"] for r in rows],
                [r[metric]["mean"] for r in rows],
                yerr=[r[metric]["std"] for r in rows],
                marker="o",
                capsize=3,
                label=rule.split(":")[0],
            )
        axes.set(xlabel="malicious clients (%)", ylabel=label, title=f"{attack}, {partition}")
        axes.set_xticks([100 * f for f in results["fractions"]])
        axes.grid(alpha=0.3)
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, path)


def _rows(results: dict[str, Any], partition: str, attack: str, rule: str) -> list[dict[str, Any]]:
    return [
        r
        for r in results["settings"]
        if r["partition"] == partition and r["attack"] == attack and r["rule"] == rule
    ]


def _readme(results: dict[str, Any], study: StudyRun, title: str) -> str:
    fractions = results["fractions"]
    lines = [
        f"# {title}",
        "",
        f"`{command(results['study'], study)}` ({results['size']} size, "
        f"{results['seconds']:.0f} s, finished {results['finished_at']})",
        "",
        f"{results['clients']} clients on one combiner (each rule as defined, over all "
        f"clients), {results['rounds']} rounds, app `{results['app']}`, seeds "
        f"{results['seeds']}, splits {', '.join(results['partitions'])}. Rules: "
        f"{', '.join(f'`{r}`' for r in results['rules'])}. Each cell: clean accuracy / recall "
        "of the attacked class (the source class of a targeted flip; the worst class when "
        "every label is flipped), on the app's whole test set, mean ± std over seeds.",
        "",
        QUICK_NOTE if study.size is Size.QUICK else "",
    ]
    for attack in results["attacks"]:
        for partition in results["partitions"]:
            rows = []
            for rule in results["rules"]:
                cells = {r["fraction"]: r for r in _rows(results, partition, attack, rule)}
                rows.append(
                    [f"`{rule}`"]
                    + [
                        f"{pm(cells[f]['accuracy'])} / {pm(cells[f]['attacked_recall'])}"
                        for f in fractions
                    ]
                )
            headers = ["rule"] + [f"{100 * f:g} % malicious" for f in fractions]
            lines += [f"## `{attack}`, {partition}", "", markdown_table(headers, rows), ""]
    worst = max(fractions)
    rows = [
        [f"`{r['rule']}`", r["attack"], r["partition"]]
        + [f"{r['honest_clients'][k]:.3f}" for k in FAIRNESS]
        for r in results["settings"]
        if r["fraction"] == worst
    ]
    lines += [
        f"## How the final model serves the honest clients ({100 * worst:g} % malicious)",
        "",
        "Each honest client's expected accuracy on test data with its own label mix (the "
        "per-class recalls weighted by its training labels), over the honest clients: "
        "mean, worst, 10th percentile, standard deviation (means over seeds).",
        "",
        markdown_table(["rule", "attack", "split", *FAIRNESS], rows),
        "",
        "![clean accuracy](accuracy.png)",
        "",
        "![attacked-class recall](attacked_recall.png)",
        "",
    ]
    return "\n".join(lines)
