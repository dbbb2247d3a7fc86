"""Study 6: one client poisons its model update, against every robust rule.

Four attacks, each by one client (drawn from the seed) in a federation of its own: boosting
(`scale:factor=N` with N the number of clients, so that under FedAvg the attacker's model
replaces the global one), model replacement with a backdoor (Bagdasaryan et al. 2020: the
same boost on a model trained on backdoored data, the backdoor study's trigger,
`backdoor:...+scale:factor=N`), sign flipping (`sign_flip`: the negated update) and
Gaussian noise instead of an update (`noise:std=1`, Blanchard et al. 2017; about 20 times
the size of the first layer's weights). The clean federation is the baseline. For each
split, one federation per attack runs one session per rule (`sessions.run_sessions`) from
the same seed model; each final model is scored on the whole test set (clean accuracy), by
the trigger's attack success rate (ASR; for the attacks without a backdoor it is the rate
at which the trigger alone fools the model) and by how it serves the honest clients. The
plain boost shows how far one client pulls each rule; the boosted backdoor, whether one
client can implant a backdoor in one go where ten percent of clients with plain backdoors
(study 5) need many rounds. The rules and their tuning are those of the label-flipping
study (for up to 20 % attackers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.attacks import parse_attack
from stratafl.experiments import backdoor, label_flipping
from stratafl.experiments.label_flipping import CLEAN, malicious_clients
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

NAME = "model-poisoning"
KEYS = ("partition", "attack", "rule")
NOISE_STD = 1.0
TUNED_FOR = 0.2
"""The share of attackers the rules are tuned for, as in the label-flipping study."""


ATTACK_KINDS = ("scale", "backdoor+scale", "sign_flip", "noise")


@dataclass(frozen=True)
class Scale:
    clients: int
    rounds: int
    partitions: tuple[str, ...]
    clip_norm: float  # norm_bounding's C, as in the label-flipping study
    attack_kinds: tuple[str, ...] = ATTACK_KINDS


SCALES = {
    # quick: the two boosting attacks only (one federation each); the others run the same code
    Size.QUICK: Scale(7, 2, ("iid",), clip_norm=1.0, attack_kinds=("scale", "backdoor+scale")),
    Size.FULL: Scale(10, 20, label_flipping.PARTITIONS, clip_norm=2.0),
}


def attacks(scale: Scale) -> list[str]:
    """The attacks, each run by one client: boosting by N, boosting a backdoored model by N
    (model replacement), sign flip, Gaussian noise (those of ``scale.attack_kinds``)."""
    boost = f"scale:factor={scale.clients}"
    spec = {
        "scale": boost,
        "backdoor+scale": f"{backdoor.ATTACK}+{boost}",
        "sign_flip": "sign_flip",
        "noise": f"noise:std={NOISE_STD:g}",
    }
    return [spec[kind] for kind in scale.attack_kinds]


def short_name(attack: str) -> str:
    """An attack's name without its parameters: ``backdoor+scale`` for the replacement."""
    return "+".join(part.split(":")[0] for part in attack.split("+"))


def rules(scale: Scale) -> list[str]:
    """The label-flipping study's rules on as many clients: tuned for 20 % attackers (a
    defender does not know that only one client attacks), Bulyan as far as n allows."""
    fractions = (0.0, TUNED_FOR)
    return label_flipping.rules(
        label_flipping.Scale(scale.clients, scale.rounds, fractions, (), scale.clip_norm)
    )


def run(study: StudyRun) -> dict[str, Any]:
    """Run the clean federation and each attack on every split with every seed."""
    scale = SCALES[study.size]
    started = time.monotonic()
    for attack in attacks(scale):
        parse_attack(attack)
    Scorer.of(study.app_spec, "iid", scale.clients, study.seeds[0], NAME)  # fails before starts
    runs = []
    for partition in scale.partitions:
        for attack in (CLEAN, *attacks(scale)):
            for seed in study.seeds:
                runs += study.resumable(
                    NAME,
                    {"partition": partition, "attack": attack, "seed": seed},
                    partial(_federation, study, scale, partition, attack, seed),
                )
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": 1,
        "rounds": scale.rounds,
        "partitions": list(scale.partitions),
        "attacks": [CLEAN, *attacks(scale)],
        "rules": rules(scale),
        "settings": summarise(runs, KEYS, ("accuracy", "asr")),
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plots, _readme)


def _federation(
    study: StudyRun, scale: Scale, partition: str, attack: str, seed: int
) -> list[dict[str, Any]]:
    """One federation, one session per rule; a record per rule."""
    bad = malicious_clients(1 / scale.clients, scale.clients, seed) if attack != CLEAN else []
    federation = AttackedFederation(partition, seed, scale.clients, scale.rounds, bad, attack)
    setting = {"partition": partition, "attack": attack}
    return scored_sessions(study, NAME, federation, rules(scale), setting, backdoor.trigger())


def _plots(results: dict[str, Any], folder: Path) -> None:
    _plot(results, folder / "accuracy.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    partitions = results["partitions"]
    figure = new_figure(1, len(partitions), width=7.0, height=3.8)
    for axes, partition in zip(figure.axes, partitions, strict=True):
        groups = [
            (
                short_name(attack),
                {
                    r["rule"]: r["accuracy"]
                    for r in results["settings"]
                    if r["partition"] == partition and r["attack"] == attack
                },
            )
            for attack in results["attacks"]
        ]
        plot_bars(axes, results["rules"], groups)
        axes.set(ylabel="final clean accuracy", title=partition)
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, path)


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    cells = {(r["partition"], r["attack"], r["rule"]): r for r in results["settings"]}
    lines = [
        f"# {STUDY.title}",
        "",
        f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
        f"finished {results['finished_at']})",
        "",
        f"{results['clients']} clients on one combiner, {results['rounds']} rounds, app "
        f"`{results['app']}`, seeds {results['seeds']}. One client runs each attack "
        "(`none`: the clean federation). Each cell: final clean accuracy on the app's whole "
        "test set, mean ± std over seeds.",
        "",
        QUICK_NOTE if study.size is Size.QUICK else "",
    ]
    for partition in results["partitions"]:
        rows = [
            [f"`{rule}`"] + [pm(cells[partition, a, rule]["accuracy"]) for a in results["attacks"]]
            for rule in results["rules"]
        ]
        headers = ["rule"] + [f"`{a}`" for a in results["attacks"]]
        lines += [f"## {partition}", "", markdown_table(headers, rows), ""]
    replacement = next(a for a in results["attacks"] if "+" in a)
    lines += [
        "## Model replacement: attack success rate",
        "",
        f"One client trains on backdoored data and boosts its update (`{replacement}`): "
        "the share of stamped test images (true class not the target) that the final model "
        "calls the target, against the clean federation's rate for the same trigger. "
        "Mean ± std over seeds.",
        "",
    ]
    for partition in results["partitions"]:
        rows = [
            [f"`{rule}`", pm(cells[partition, CLEAN, rule]["asr"])]
            + [pm(cells[partition, replacement, rule]["asr"])]
            for rule in results["rules"]
        ]
        headers = ["rule", "ASR, clean", f"ASR, `{short_name(replacement)}`"]
        lines += [f"### {partition}", "", markdown_table(headers, rows), ""]
    attacked = [r for r in results["settings"] if r["attack"] != CLEAN]
    lines += [
        "## How the final model serves the honest clients",
        "",
        FAIRNESS_NOTE,
        "",
        fairness_table(attacked, KEYS),
        "",
        "![final clean accuracy](accuracy.png)",
        "",
    ]
    return "\n".join(lines)


STUDY = Study(
    name=NAME,
    title="Model poisoning: one boosted, backdoor-boosted, sign-flipped or noise update, "
    "every rule",
    run=run,
)
