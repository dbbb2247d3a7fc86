"""Study 4: label flipping (Tolpegin et al. 2020) against every robust rule.

A fraction of the clients flips labels, all of them (l -> 9 - l) or one class to another
(6 -> 0, shirt to T-shirt/top); the others are honest. For each split (IID and
Dirichlet 0.5), attack and fraction, one federation starts and runs one session per
aggregation rule (`stratafl.experiments.sessions`), each from the same seed model. Each
final model is scored on the whole test set: clean accuracy, the recall of the attacked
class (the source class; for the all-labels flip, the worst class), and how it serves
each honest client's own label mix (`evaluation.mix_accuracies`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from stratafl.attacks import attacked
from stratafl.client.app import ClientContext, load_app
from stratafl.experiments import flip_report
from stratafl.experiments.evaluation import (
    class_recalls,
    label_mixes,
    mix_accuracies,
    pooled_app,
)
from stratafl.experiments.study import Size, Study, StudyRun, spread, timed
from stratafl.settings import SessionConfig

if TYPE_CHECKING:
    from stratafl.launch.federation import FederationSpec

NAME = "label-flipping"
PARTITIONS = ("iid", "dirichlet:0.5")
CLASSES = 10
CLEAN = flip_report.CLEAN


@dataclass(frozen=True)
class Scale:
    clients: int
    rounds: int
    fractions: tuple[float, ...]  # of malicious clients; 0 is the clean baseline
    attacks: tuple[str, ...]
    clip_norm: float  # norm_bounding's C: near the honest update norm of the early rounds
    partitions: tuple[str, ...] = PARTITIONS  # quick: IID only, to keep CI's run short


SCALES = {
    # 7 clients: the fewest Bulyan with f=1 runs on (n >= 4f + 3); 20 % of 7 is 1 client.
    Size.QUICK: Scale(
        7, 2, (0.0, 0.2), ("label_flip:source=6,target=0",), clip_norm=1.0, partitions=("iid",)
    ),
    Size.FULL: Scale(
        10, 20, (0.0, 0.1, 0.2), ("label_flip", "label_flip:source=6,target=0"), clip_norm=2.0
    ),
}


def rules(scale: Scale) -> list[str]:
    """Every rule, tuned to tolerate the largest number of attackers the study has (as a
    defender who knows the threat would), within what the client count allows."""
    worst = max(1, max(malicious_count(f, scale.clients) for f in scale.fractions))
    bulyan_f = max(0, min(worst, (scale.clients - 3) // 4))
    return [
        "fedavg",
        "median",
        f"trimmed_mean:beta={max(scale.fractions):g}",
        f"krum:f={worst}",
        f"multikrum:f={worst}",
        f"bulyan:f={bulyan_f}",
        f"norm_bounding:clip_norm={scale.clip_norm:g}",
    ]


def malicious_count(fraction: float, clients: int) -> int:
    return round(fraction * clients)


def malicious_clients(fraction: float, clients: int, seed: int) -> list[int]:
    """Which partitions attack: a seeded draw, nested (the 10 % are among the 20 %)."""
    order = np.random.default_rng(seed).permutation(clients)
    return sorted(int(i) for i in order[: malicious_count(fraction, clients)])


def settings(scale: Scale) -> list[tuple[str, float]]:
    """(attack, fraction) of each federation: the clean baseline once, then each attack."""
    poisoned = [(a, f) for a in scale.attacks for f in scale.fractions if f > 0]
    return [(CLEAN, 0.0), *poisoned]


def run(study: StudyRun) -> dict[str, Any]:
    """Run every setting with every seed; write results.json, plots and README.md."""
    scale = SCALES[study.size]
    started = time.monotonic()
    app = load_app(study.app_spec, ClientContext(seed=study.seeds[0]))
    for attack in scale.attacks:  # an app the clients cannot poison fails before any start
        attacked(app, attack)
    pooled_app(study.app_spec, study.seeds[0], NAME)  # and so does one the study cannot score
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
        "partitions": list(scale.partitions),
        "attacks": list(scale.attacks),
        "fractions": list(scale.fractions),
        "rules": rules(scale),
        "settings": flip_report.summarise(runs, scale.attacks, scale.fractions, scale.partitions),
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, flip_report.plots, flip_report.readme(STUDY.title))


def attacked_federation(
    study: StudyRun, scale: Scale, partition: str, attack: str, fraction: float, seed: int
) -> tuple[FederationSpec, list[SessionConfig]]:
    """The federation of one setting (its attackers drawn by `malicious_clients`, on one
    combiner) and one session per rule; shared with the backdoor study."""
    from stratafl.launch.federation import FederationSpec  # the tiers: only when running

    bad = malicious_clients(fraction, scale.clients, seed) if attack != CLEAN else []
    spec = FederationSpec(
        app=study.app_spec,
        clients=scale.clients,
        combiners=1,  # each rule as defined, over all clients (study 10 spreads them)
        partition=partition,
        seed=seed,
        attacks=dict.fromkeys(bad, attack),
    )
    sessions = [
        SessionConfig(rounds=scale.rounds, min_clients=scale.clients, aggregator=rule, seed=seed)
        for rule in rules(scale)
    ]
    return spec, sessions


def _federation(
    study: StudyRun, scale: Scale, partition: str, attack: str, fraction: float, seed: int
) -> list[dict[str, Any]]:
    """One federation, one session per rule; a record per rule."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running

    began = time.monotonic()
    spec, sessions = attacked_federation(study, scale, partition, attack, fraction, seed)
    bad = list(spec.attacks)  # the malicious partitions, in order
    app = pooled_app(study.app_spec, seed, NAME)
    x_test, y_test = app.test_data()
    mixes = label_mixes(app.train_labels(), partition, scale.clients, seed, CLASSES)
    honest = [i for i in range(scale.clients) if i not in bad]
    records = []
    for result in run_sessions(spec, sessions):
        recalls = class_recalls(app, result.final, CLASSES)
        records.append(
            {
                "partition": partition,
                "attack": attack,
                "fraction": fraction,
                "malicious": bad,
                "seed": seed,
                "rule": result.config.aggregator,
                "accuracy": float(app.evaluate_on(result.final, x_test, y_test)["accuracy"]),
                "class_recall": recalls,
                "accuracy_per_round": [r.accuracy for r in result.rounds],
                "honest_clients": spread(mix_accuracies(recalls, mixes[honest])),
            }
        )
    study.log(
        f"{NAME}: {partition}, {attack} on {len(bad)} of {scale.clients} clients, seed {seed}: "
        f"{len(records)} rules ({time.monotonic() - began:.0f} s)"
    )
    return records


STUDY = Study(
    name=NAME,
    title="Label flipping: clean accuracy and attacked-class recall, every rule",
    run=run,
)
