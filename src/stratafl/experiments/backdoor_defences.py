"""Study 12: defences that stop a backdoor and keep the honest non-IID clients.

The robust rules of studies 4-7 pay on non-IID data even when nobody attacks (they drop
the honest updates that look different), and norm bounding lets a 20 % backdoor through.
This study sets the defences built for backdoors, FLAME (Nguyen et al. 2022: cluster the
updates by cosine distance, clip at the median norm, add adaptive noise) and the robust
learning rate (RLR, Ozdayi et al. 2021: step against the coordinates the clients disagree
on), beside FedAvg and the best rules of the earlier studies, on two questions: what each
costs with no attacker on every split, and what it leaves of a 20 % pixel-trigger backdoor
(the backdoor study's) on Dirichlet 0.5. One federation per case and seed, one combiner
(each rule as its paper defines it), one session per rule from the same seed model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.experiments import backdoor
from stratafl.experiments.label_flipping import malicious_clients
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.poisoning import (
    FAIRNESS_NOTE,
    AttackedFederation,
    Scorer,
    fairness_table,
    plot_bars,
    scored_sessions,
    summarise,
)
from stratafl.experiments.study import QUICK_NOTE, Size, Study, StudyRun, command, pm, timed
from stratafl.settings import SessionConfig

NAME = "backdoor-defences"
KEYS = ("partition", "fraction", "rule")
LEFT_OUT = ("attackers_left_out", "honest_left_out")
"""Per run, the shares of accepted updates the rule left out (`poisoning.left_out_shares`)."""
ASR_GOAL = 0.05
COST_GOAL = 0.01


@dataclass(frozen=True)
class Scale:
    clients: int
    rounds: int
    clean: tuple[str, ...]  # splits run with no attacker
    attacked: tuple[str, ...]  # splits run with `fraction` of backdoor clients
    fraction: float
    clip_norm: float  # norm_bounding's C, as in the label-flipping study


SCALES = {
    Size.QUICK: Scale(7, 2, ("iid",), ("iid",), 0.2, clip_norm=1.0),
    Size.FULL: Scale(
        10, 20, ("iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"), ("dirichlet:0.5",), 0.2, 2.0
    ),
}


def rules(scale: Scale) -> list[str]:
    """FedAvg, the best of the earlier studies' rules (tuned for the attackers, as there),
    and the two backdoor defences with their papers' settings."""
    attackers = max(1, malicious_count(scale))
    return [
        "fedavg",
        f"norm_bounding:clip_norm={scale.clip_norm:g}",
        f"trimmed_mean:beta={scale.fraction:g}",
        f"multikrum:f={attackers}",
        "flame",
        "rlr",
    ]


def malicious_count(scale: Scale) -> int:
    return len(malicious_clients(scale.fraction, scale.clients, 0))


def cases(scale: Scale) -> list[tuple[str, float]]:
    """(split, fraction of attackers) of each federation."""
    return [(p, 0.0) for p in scale.clean] + [(p, scale.fraction) for p in scale.attacked]


def run(study: StudyRun) -> dict[str, Any]:
    """Every rule in every case with every seed; write results.json, plots, README.md."""
    scale = SCALES[study.size]
    for rule in rules(scale):  # a bad spec fails before anything starts
        SessionConfig(min_clients=scale.clients, aggregator=rule)
    Scorer.of(study.app_spec, "iid", scale.clients, study.seeds[0], NAME)
    started = time.monotonic()
    runs = []
    for partition, fraction in cases(scale):
        for seed in study.seeds:
            runs += study.resumable(
                NAME,
                {"partition": partition, "fraction": fraction, "seed": seed},
                partial(_federation, study, scale, partition, fraction, seed),
            )
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": 1,
        "rounds": scale.rounds,
        "attack": backdoor.ATTACK,
        "cases": [list(c) for c in cases(scale)],
        "rules": rules(scale),
        "settings": summarise(runs, KEYS, ("accuracy", "asr", *LEFT_OUT)),
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plots, _readme)


def _federation(
    study: StudyRun, scale: Scale, partition: str, fraction: float, seed: int
) -> list[dict[str, Any]]:
    """One federation, one session per rule; a record per rule."""
    bad = malicious_clients(fraction, scale.clients, seed)
    federation = AttackedFederation(
        partition, seed, scale.clients, scale.rounds, bad, backdoor.ATTACK
    )
    setting = {"partition": partition, "fraction": fraction}
    return scored_sessions(study, NAME, federation, rules(scale), setting, backdoor.trigger())


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per rule: its worst cost against FedAvg with no attacker (over the splits), and on
    each attacked split its ASR and its clean accuracy against FedAvg's with no attacker;
    ``meets_goals`` if ASR <= 5 % and both accuracy losses are at most 1 point."""
    cells = {(s["partition"], s["fraction"], s["rule"]): s for s in results["settings"]}
    clean = [p for p, f in results["cases"] if f == 0]
    attacked = [(p, f) for p, f in results["cases"] if f > 0]
    out = []
    for rule in results["rules"]:
        cost = max(
            cells[p, 0.0, "fedavg"]["accuracy"]["mean"] - cells[p, 0.0, rule]["accuracy"]["mean"]
            for p in clean
        )
        under_attack = [
            {
                "partition": p,
                "asr": cells[p, f, rule]["asr"]["mean"],
                "loss_vs_clean_fedavg": cells[p, 0.0, "fedavg"]["accuracy"]["mean"]
                - cells[p, f, rule]["accuracy"]["mean"],
            }
            for p, f in attacked
            if (p, 0.0, "fedavg") in cells
        ]
        meets = cost <= COST_GOAL and all(
            a["asr"] <= ASR_GOAL and a["loss_vs_clean_fedavg"] <= COST_GOAL for a in under_attack
        )
        out.append({"rule": rule, "worst_cost": cost, "attacked": under_attack, "meets": meets})
    return out


def _plots(results: dict[str, Any], folder: Path) -> None:
    _plot(results, folder / "defences.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    figure = new_figure(1, 2, width=6.5, height=4.0)
    rules_, cells = results["rules"], results["settings"]
    clean = [
        (p, {s["rule"]: s["accuracy"] for s in cells if s["partition"] == p and s["fraction"] == f})
        for p, f in results["cases"]
        if f == 0
    ]
    plot_bars(figure.axes[0], rules_, clean)
    figure.axes[0].set(ylabel="test accuracy, no attacker", title="the cost of each defence")
    figure.axes[0].legend(fontsize="small")
    attacked = [
        (
            f"{p}, {metric}",
            {s["rule"]: s[metric] for s in cells if s["partition"] == p and s["fraction"] == f},
        )
        for p, f in results["cases"]
        if f > 0
        for metric in ("accuracy", "asr")
    ]
    plot_bars(figure.axes[1], rules_, attacked)
    figure.axes[1].set(title=f"{results['attack']} on 20 % of the clients")
    figure.axes[1].legend(fontsize="small")
    save_figure(figure, path)


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    cells = {(s["partition"], s["fraction"], s["rule"]): s for s in results["settings"]}
    clean = [p for p, f in results["cases"] if f == 0]

    def cell(partition: str, rule: str) -> str:
        mine, fedavg = cells[partition, 0.0, rule], cells[partition, 0.0, "fedavg"]
        return (
            f"{pm(mine['accuracy'])} ({mine['accuracy']['mean'] - fedavg['accuracy']['mean']:+.3f})"
        )

    rows = [[f"`{rule}`"] + [cell(p, rule) for p in clean] for rule in results["rules"]]
    lines = [
        f"# {STUDY.title}",
        "",
        f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
        f"finished {results['finished_at']})",
        "",
        f"{results['clients']} clients on one combiner, {results['rounds']} rounds, app "
        f"`{results['app']}`, seeds {results['seeds']}; mean ± std over seeds.",
        "",
        QUICK_NOTE if study.size is Size.QUICK else "",
        "## No attacker: test accuracy (difference to FedAvg)",
        "",
        markdown_table(["rule", *clean], rows),
        "",
    ]
    for partition, fraction in (c for c in results["cases"] if c[1] > 0):
        body = [
            [
                f"`{rule}`",
                pm(cells[partition, fraction, rule]["accuracy"]),
                pm(cells[partition, fraction, rule]["asr"]),
            ]
            for rule in results["rules"]
        ]
        lines += [
            f"## {fraction:.0%} backdoor clients on {partition}",
            "",
            f"`{results['attack']}`: clean accuracy and attack success rate (ASR).",
            "",
            markdown_table(["rule", "clean accuracy", "ASR"], body),
            "",
        ]
    goals = [
        f"- `{v['rule']}`: worst cost with no attacker {v['worst_cost'] * 100:+.1f} points; "
        + "; ".join(
            f"on {a['partition']} ASR {a['asr']:.1%}, {a['loss_vs_clean_fedavg'] * 100:+.1f} "
            "points below FedAvg with no attacker"
            for a in v["attacked"]
        )
        + (" — **meets the goals**" if v["meets"] else "")
        for v in verdicts(results)
    ]
    attacked_rows = [s for s in results["settings"] if s["fraction"] > 0]
    lines += [*_left_out_section(results), ""]
    lines += [
        f"## Against the goals (ASR at most {ASR_GOAL:.0%}, at most {COST_GOAL * 100:.0f} "
        "point below FedAvg)",
        "",
        *goals,
        "",
        "## How the final model serves the honest clients under attack",
        "",
        FAIRNESS_NOTE,
        "",
        fairness_table(attacked_rows, KEYS),
        "",
        "![defences](defences.png)",
        "",
    ]
    return "\n".join(lines)


def _left_out_section(results: dict[str, Any]) -> list[str]:
    """Whose updates the selecting rules dropped, from each round's outcomes: the attackers'
    (a detection rate) and the honest clients' (the price on non-IID data)."""
    settings = results["settings"]
    selecting = {  # NaN (no attackers to leave out) compares as not above 0
        s["rule"]
        for s in settings
        if s["honest_left_out"]["mean"] > 0 or s["attackers_left_out"]["mean"] > 0
    }
    body = [
        [
            f"`{s['rule']}`",
            s["partition"],
            f"{s['fraction']:.0%}",
            pm(s["attackers_left_out"], 2),
            pm(s["honest_left_out"], 2),
        ]
        for rule in results["rules"]
        if rule in selecting
        for s in settings
        if s["rule"] == rule
    ]
    return [
        "## Whose updates the rule left out",
        "",
        "Of the updates that arrived and passed the checks, over all rounds: the share each "
        "rule left out of the model (each round outcome's `left_out`), for the attackers and "
        "for the honest clients. Only the rules that select among the updates leave any out; "
        "the others use a part of every update.",
        "",
        markdown_table(
            ["rule", "split", "attackers", "attackers left out", "honest left out"], body
        )
        if body
        else "No rule left an update out.",
    ]


STUDY = Study(
    name=NAME,
    title="Backdoor defences: FLAME and the robust learning rate against the earlier rules",
    run=run,
)
