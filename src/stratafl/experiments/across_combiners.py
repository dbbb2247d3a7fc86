"""Study 10: label flipping and a backdoor across 3 combiners, the attackers together or
spread, to show what each rule keeps when it runs per combiner and then across them.

Every robust rule runs at each combiner over its clients and again at the reducer over the
combiners' partials (docs/aggregators.md, "Across tiers"): a median's guarantee holds per
combiner, so 20 % attackers overall, all on one combiner, are a majority there, while the
same attackers spread over the combiners are a minority everywhere. Each federation pins
every client to a combiner (`FederationSpec.placement`; the controller honours it while the
combiner has room and never rebalances a placed client) in equal shares:

- ``one``: every attacker on combiner 0;
- ``spread``: the attackers round-robin over the combiners;
- ``flat`` (full size): a single combiner, each rule as defined, for reference.

Scores as in studies 4 and 5: clean accuracy, and the attack's own measure (the worst
class's recall under the all-labels flip; the attack success rate of the backdoor), plus
how the final model serves the honest clients. The rules are the label-flipping study's,
tuned for the clients one combiner holds. Where the clients actually trained is read from
each round's outcomes and kept in results.json (``combiner_of``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from stratafl.attacks import Backdoor, attacked, parse_attack
from stratafl.client.app import ClientContext, load_app
from stratafl.errors import ConfigError
from stratafl.experiments import flip_report, label_flipping
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.poisoning import (
    FAIRNESS_NOTE,
    Scorer,
    backdoor_success,
    fairness_table,
    plot_bars,
    summarise,
)
from stratafl.experiments.study import QUICK_NOTE, Size, Study, StudyRun, command, pm, timed
from stratafl.settings import SessionConfig

NAME = "across-combiners"
ATTACKS = ("label_flip", "backdoor:target=0,fraction=0.5")
KEYS = ("partition", "attack", "placement", "rule")
MEASURE = {"label_flip": "worst-class recall", "backdoor": "attack success rate"}


@dataclass(frozen=True)
class Scale:
    clients: int
    combiners: int
    rounds: int
    fraction: float  # of malicious clients
    partitions: tuple[str, ...]
    placements: tuple[str, ...]
    clip_norm: float
    attacks: tuple[str, ...] = ATTACKS  # quick: the backdoor only, to keep CI's run short

    @property
    def per_combiner(self) -> int:
        return self.clients // self.combiners


SCALES = {
    # 3 clients a combiner: the fewest Krum (f=0) runs on; 20 % of 9 is 2 clients.
    Size.QUICK: Scale(
        9, 3, 2, 0.2, ("iid",), ("one", "spread"), clip_norm=1.0, attacks=ATTACKS[1:]
    ),
    # 5 clients a combiner: Krum with f=1 runs at each; 20 % of 15 is 3 clients.
    Size.FULL: Scale(
        15, 3, 20, 0.2, label_flipping.PARTITIONS, ("flat", "one", "spread"), clip_norm=2.0
    ),
}


def rules(scale: Scale) -> list[str]:
    """The label-flipping study's rules, each tuned for the attackers as far as the clients
    of one combiner allow (Krum needs n >= 2f + 3 there, Bulyan n >= 4f + 3)."""
    worst = max(1, label_flipping.malicious_count(scale.fraction, scale.clients))
    krum_f = max(0, min(worst, (scale.per_combiner - 3) // 2))
    bulyan_f = max(0, min(worst, (scale.per_combiner - 3) // 4))
    return [
        "fedavg",
        "median",
        f"trimmed_mean:beta={scale.fraction:g}",
        f"krum:f={krum_f}",
        f"multikrum:f={krum_f}",
        f"bulyan:f={bulyan_f}",
        f"norm_bounding:clip_norm={scale.clip_norm:g}",
    ]


def placement(malicious: list[int], scale: Scale, how: str) -> dict[int, int]:
    """Client -> combiner index, ``per_combiner`` clients on each: the attackers first
    (all on combiner 0 for ``one``, round-robin for ``spread``), then the honest clients
    in the free places; ``flat`` is one combiner and places nobody."""
    if how == "flat":
        return {}
    if how not in ("one", "spread"):
        raise ConfigError(f"unknown placement {how!r}; use flat, one or spread")
    if how == "one" and len(malicious) > scale.per_combiner:
        raise ConfigError(
            f"{len(malicious)} attackers do not fit one combiner of {scale.per_combiner}"
        )
    slots = [k for k in range(scale.combiners) for _ in range(scale.per_combiner)]
    placed: dict[int, int] = {}
    for j, client in enumerate(malicious):
        combiner = 0 if how == "one" else j % scale.combiners
        placed[client] = combiner
        slots.remove(combiner)
    for client in (c for c in range(scale.clients) if c not in placed):
        placed[client] = slots.pop(0)
    return placed


def run(study: StudyRun) -> dict[str, Any]:
    """Run every split, attack and placement with every seed; write results.json, README."""
    scale = SCALES[study.size]
    started = time.monotonic()
    app = load_app(study.app_spec, ClientContext(seed=study.seeds[0]))
    for attack in scale.attacks:  # an app the clients cannot poison fails before any start
        attacked(app, attack)
    Scorer.of(study.app_spec, "iid", scale.clients, study.seeds[0], NAME)
    runs = []
    for partition in scale.partitions:
        for attack in scale.attacks:
            for how in scale.placements:
                for seed in study.seeds:
                    runs += study.resumable(
                        NAME,
                        {"partition": partition, "attack": attack, "placement": how, "seed": seed},
                        partial(_federation, study, scale, partition, attack, how, seed),
                    )
    results = {
        **study.described(NAME),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "rounds": scale.rounds,
        "fraction": scale.fraction,
        "partitions": list(scale.partitions),
        "attacks": list(scale.attacks),
        "placements": list(scale.placements),
        "rules": rules(scale),
        "settings": summarise(runs, KEYS, ("accuracy", "attack_measure")),
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plots, _readme)


def _federation(
    study: StudyRun, scale: Scale, partition: str, attack: str, how: str, seed: int
) -> list[dict[str, Any]]:
    """One federation with its clients placed, one session per rule; a record per rule."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    began = time.monotonic()
    bad = label_flipping.malicious_clients(scale.fraction, scale.clients, seed)
    spec = FederationSpec(
        app=study.app_spec,
        clients=scale.clients,
        combiners=1 if how == "flat" else scale.combiners,
        partition=partition,
        seed=seed,
        attacks=dict.fromkeys(bad, attack),
        placement=placement(bad, scale, how),
    )
    sessions = [
        SessionConfig(rounds=scale.rounds, min_clients=scale.clients, aggregator=rule, seed=seed)
        for rule in rules(scale)
    ]
    scorer = Scorer.of(study.app_spec, partition, scale.clients, seed, NAME)
    threat = parse_attack(attack)
    records = []
    for result in run_sessions(spec, sessions):
        scores = scorer.final(result.final, bad)
        measure = (
            backdoor_success(scorer.app, result.final, threat)
            if isinstance(threat, Backdoor)
            else flip_report.attacked_recall(scores["class_recall"], attack)
        )
        records.append(
            {
                "partition": partition,
                "attack": attack,
                "placement": how,
                "malicious": bad,
                "seed": seed,
                "rule": result.config.aggregator,
                **scores,
                "attack_measure": measure,
                "combiner_of": {
                    o["client_id"]: o["combiner_id"] for r in result.rounds for o in r.outcomes
                },
            }
        )
    study.log(
        f"{NAME}: {partition}, {attack} on {len(bad)} of {scale.clients} clients ({how}), "
        f"seed {seed}: {len(records)} rules ({time.monotonic() - began:.0f} s)"
    )
    return records


def _plots(results: dict[str, Any], folder: Path) -> None:
    for metric in ("accuracy", "attack_measure"):
        _plot(results, metric, folder / f"{metric}.png")


def _plot(results: dict[str, Any], metric: str, path: Path) -> None:
    attacks, partitions = results["attacks"], results["partitions"]
    figure = new_figure(len(attacks), len(partitions), width=7.0, height=3.8)
    for index, (attack, partition) in enumerate((a, p) for a in attacks for p in partitions):
        axes = figure.axes[index]
        groups = [
            (
                how,
                {
                    r["rule"]: r[metric]
                    for r in results["settings"]
                    if (r["partition"], r["attack"], r["placement"]) == (partition, attack, how)
                },
            )
            for how in results["placements"]
        ]
        plot_bars(axes, results["rules"], groups)
        label = "clean accuracy" if metric == "accuracy" else MEASURE[attack.split(":")[0]]
        axes.set(ylabel=label, title=f"{attack.split(':')[0]}, {partition}")
    figure.axes[0].legend(fontsize="small")
    save_figure(figure, path)


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    placements = results["placements"]
    cells = {
        (r["partition"], r["attack"], r["placement"], r["rule"]): r for r in results["settings"]
    }
    lines = [
        f"# {STUDY.title}",
        "",
        f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
        f"finished {results['finished_at']})",
        "",
        f"{results['clients']} clients, {100 * results['fraction']:g} % of them malicious, "
        f"on {results['combiners']} combiners of equal size (`one`: every attacker on "
        "combiner 0; `spread`: round-robin; `flat`: a single combiner), "
        f"{results['rounds']} rounds, app `{results['app']}`, seeds {results['seeds']}. "
        "Each cell: final clean accuracy / the attack's measure, on the app's whole test "
        "set, mean ± std over seeds.",
        "",
        QUICK_NOTE if study.size is Size.QUICK else "",
    ]
    for partition in results["partitions"]:
        for attack in results["attacks"]:
            measure = MEASURE[attack.split(":")[0]]
            rows = [
                [f"`{rule}`"]
                + [
                    f"{pm(cells[partition, attack, p, rule]['accuracy'])} / "
                    f"{pm(cells[partition, attack, p, rule]['attack_measure'])}"
                    for p in placements
                ]
                for rule in results["rules"]
            ]
            lines += [
                f"## `{attack}`, {partition}: clean accuracy / {measure}",
                "",
                markdown_table(["rule", *placements], rows),
                "",
            ]
    lines += [
        "## How the final model serves the honest clients",
        "",
        FAIRNESS_NOTE,
        "",
        fairness_table(results["settings"], KEYS),
        "",
        "![clean accuracy](accuracy.png)",
        "",
        "![the attack's measure](attack_measure.png)",
        "",
    ]
    return "\n".join(lines)


STUDY = Study(
    name=NAME,
    title="Across combiners: label flipping and a backdoor, attackers together or spread",
    run=run,
)
