"""Study 5: a pixel-pattern backdoor (Gu et al. 2017; Bagdasaryan et al. 2020) against
every robust rule, round by round.

A fraction of the clients stamps a 4x4 white square on half of its training images and
relabels them to class 0 (`stratafl.attacks.Backdoor`); the others are honest. For each
split (IID and Dirichlet 0.5) and fraction, one federation starts and runs one session per
rule (`sessions.run_sessions`), each from the same seed model, keeping every round's
global model. Each is scored on the whole test set: clean accuracy, and the attack success
rate (ASR: the share of stamped test images not of class 0 that the model calls class 0).
The 0 % row is the clean federation: its ASR is how often the trigger alone fools a model.
The rules, their tuning and which clients attack are those of the label-flipping study.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.attacks import Backdoor, attacked, parse_attack
from stratafl.client.app import ClientContext, load_app
from stratafl.experiments.label_flipping import (
    Scale,
    attacked_federation,
    rules,
    settings,
)
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.poisoning import (
    FAIRNESS_NOTE,
    Scorer,
    backdoor_success,
    fairness_table,
    plot_per_round,
    summarise,
)
from stratafl.experiments.study import QUICK_NOTE, Size, Study, StudyRun, command, pm, timed

NAME = "backdoor"
ATTACK = "backdoor:target=0,fraction=0.5"
KEYS = ("partition", "fraction", "rule")

SCALES = {
    # 7 clients, as label flipping: Bulyan with f=1 runs; 20 % of 7 is 1 client.
    Size.QUICK: Scale(7, 2, (0.0, 0.2), (ATTACK,), clip_norm=1.0, partitions=("iid",)),
    Size.FULL: Scale(10, 20, (0.0, 0.1, 0.2), (ATTACK,), clip_norm=2.0),
}


def trigger() -> Backdoor:
    backdoor = parse_attack(ATTACK)
    assert isinstance(backdoor, Backdoor)
    return backdoor


def run(study: StudyRun) -> dict[str, Any]:
    """Run every split and fraction with every seed; write results.json, plots, README.md."""
    scale = SCALES[study.size]
    started = time.monotonic()
    # An app the clients cannot poison, or the study cannot score, fails before any start.
    attacked(load_app(study.app_spec, ClientContext(seed=study.seeds[0])), ATTACK)
    Scorer.of(study.app_spec, "iid", scale.clients, study.seeds[0], NAME)
    runs = []
    for partition in scale.partitions:
        for attack, fraction in settings(scale):
            for seed in study.seeds:
                runs += study.resumable(
                    NAME,
                    {"partition": partition, "attack": attack, "fraction": fraction, "seed": seed},
                    partial(_federation, study, scale, partition, attack, fraction, seed),
                )
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": 1,
        "rounds": scale.rounds,
        "attack": ATTACK,
        "partitions": list(scale.partitions),
        "fractions": list(scale.fractions),
        "rules": rules(scale),
        "settings": summarise(
            runs, KEYS, ("accuracy", "asr"), ("accuracy_per_round", "asr_per_round")
        ),
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plots, _readme)


def _federation(
    study: StudyRun, scale: Scale, partition: str, attack: str, fraction: float, seed: int
) -> list[dict[str, Any]]:
    """One federation, one session per rule; a record per rule, scored round by round."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running

    began = time.monotonic()
    spec, sessions = attacked_federation(study, scale, partition, attack, fraction, seed)
    bad = list(spec.attacks)  # the malicious partitions, in order
    scorer = Scorer.of(study.app_spec, partition, scale.clients, seed, NAME)
    backdoor = trigger()
    records = []
    for result in run_sessions(spec, sessions, round_models=True):
        records.append(
            {
                "partition": partition,
                "fraction": fraction,
                "malicious": bad,
                "seed": seed,
                "rule": result.config.aggregator,
                **scorer.final(result.final, bad),
                "asr": backdoor_success(scorer.app, result.final, backdoor),
                "accuracy_per_round": [scorer.accuracy(p) for p in result.round_models],
                "asr_per_round": [
                    backdoor_success(scorer.app, p, backdoor) for p in result.round_models
                ],
            }
        )
    study.log(
        f"{NAME}: {partition}, backdoor on {len(bad)} of {scale.clients} clients, seed {seed}: "
        f"{len(records)} rules ({time.monotonic() - began:.0f} s)"
    )
    return records


def _plots(results: dict[str, Any], folder: Path) -> None:
    for metric, label in (("asr", "attack success rate"), ("accuracy", "clean accuracy")):
        _plot(results, f"{metric}_per_round", label, folder / f"{metric}.png")


def _plot(results: dict[str, Any], metric: str, label: str, path: Path) -> None:
    fractions, partitions = results["fractions"], results["partitions"]
    figure = new_figure(len(fractions), len(partitions), width=5.0, height=3.6)
    for index, (fraction, partition) in enumerate((f, p) for f in fractions for p in partitions):
        axes = figure.axes[index]
        rows = [
            r
            for r in results["settings"]
            if r["partition"] == partition and r["fraction"] == fraction
        ]
        plot_per_round(axes, rows, metric, lambda r: r["rule"].split(":")[0])
        axes.set(
            xlabel="round", ylabel=label, title=f"{100 * fraction:g} % backdoored, {partition}"
        )
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, path)


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    fractions = results["fractions"]
    cells = {(r["partition"], r["fraction"], r["rule"]): r for r in results["settings"]}
    lines = [
        f"# {STUDY.title}",
        "",
        f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
        f"finished {results['finished_at']})",
        "",
        f"{results['clients']} clients on one combiner, {results['rounds']} rounds, app "
        f"`{results['app']}`, seeds {results['seeds']}. Malicious clients run "
        f"`{results['attack']}` (a 4x4 trigger on half their images, relabelled 0). Each "
        "cell: final clean accuracy / attack success rate (stamped test images not of "
        "class 0 classified as 0), on the app's whole test set, mean ± std over seeds; the "
        "0 % column is the clean federation. Per round in the plots.",
        "",
        QUICK_NOTE if study.size is Size.QUICK else "",
    ]
    for partition in results["partitions"]:
        rows = [
            [f"`{rule}`"]
            + [
                f"{pm(cells[partition, f, rule]['accuracy'])} / "
                f"{pm(cells[partition, f, rule]['asr'])}"
                for f in fractions
            ]
            for rule in results["rules"]
        ]
        headers = ["rule"] + [f"{100 * f:g} % malicious" for f in fractions]
        lines += [f"## {partition}", "", markdown_table(headers, rows), ""]
    worst = max(fractions)
    lines += [
        f"## How the final model serves the honest clients ({100 * worst:g} % malicious)",
        "",
        FAIRNESS_NOTE,
        "",
        fairness_table(
            [r for r in results["settings"] if r["fraction"] == worst], ("partition", "rule")
        ),
        "",
        "![attack success rate per round](asr.png)",
        "",
        "![clean accuracy per round](accuracy.png)",
        "",
    ]
    return "\n".join(lines)


STUDY = Study(
    name=NAME,
    title="Backdoor: clean accuracy and attack success rate per round, every rule",
    run=run,
)
