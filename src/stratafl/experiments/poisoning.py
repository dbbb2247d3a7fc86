"""What the attack studies (backdoor, model poisoning, across combiners) share: how a model
is scored, how runs are summarised over seeds, and the fairness table.

Every model is scored on the app's whole test set (`evaluation`): clean accuracy, per-class
recall, a backdoor's attack success rate, and how it serves each honest client's label mix
(`evaluation.mix_accuracies`, summarised by `study.spread`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stratafl.attacks import Backdoor
from stratafl.experiments.evaluation import (
    EvaluableApp,
    class_recalls,
    label_mixes,
    mix_accuracies,
    pooled_app,
)
from stratafl.experiments.output import markdown_table
from stratafl.experiments.study import StudyRun, mean_std, spread
from stratafl.params import Params
from stratafl.settings import SessionConfig

if TYPE_CHECKING:
    from stratafl.launch.report import RoundSummary

CLASSES = 10
FAIRNESS = ("mean", "worst", "p10", "std")


def backdoor_success(app: EvaluableApp, params: Params, backdoor: Backdoor) -> float:
    """`stratafl.attacks.attack_success_rate` through `EvaluableApp.evaluate_on`: the
    accuracy, against the target label, of the stamped test images whose true label is not
    the target (the same number; the app exposes accuracies, not predictions)."""
    x, y = app.test_data()
    keep = y != backdoor.target
    stamped = backdoor.stamp(x[keep])
    target = np.full(len(stamped), backdoor.target, dtype=y.dtype)
    return float(app.evaluate_on(params, stamped, target)["accuracy"])


@dataclass(frozen=True)
class Scorer:
    """Scores the models of one federation (one split, one seed) on the pooled test set."""

    app: EvaluableApp
    mixes: np.ndarray
    """(clients, classes): each client's label mix, as the partitioner splits the data."""

    @classmethod
    def of(cls, app_spec: str, partition: str, clients: int, seed: int, study: str) -> Scorer:
        app = pooled_app(app_spec, seed, study)
        return cls(app, label_mixes(app.train_labels(), partition, clients, seed, CLASSES))

    def accuracy(self, params: Params) -> float:
        x, y = self.app.test_data()
        return float(self.app.evaluate_on(params, x, y)["accuracy"])

    def final(self, params: Params, malicious: Sequence[int]) -> dict[str, Any]:
        """Clean accuracy, class recalls and how the model serves the honest clients."""
        recalls = class_recalls(self.app, params, CLASSES)
        honest = [i for i in range(len(self.mixes)) if i not in set(malicious)]
        return {
            "accuracy": self.accuracy(params),
            "class_recall": recalls,
            "honest_clients": spread(mix_accuracies(recalls, self.mixes[honest])),
        }


@dataclass(frozen=True)
class AttackedFederation:
    """One federation on one combiner whose ``attackers`` (partition ids) run ``attack``."""

    partition: str
    seed: int
    clients: int
    rounds: int
    attackers: Sequence[int]
    attack: str


def scored_sessions(
    study: StudyRun,
    name: str,
    federation: AttackedFederation,
    rules: Sequence[str],
    setting: Mapping[str, Any],
    trigger: Backdoor,
) -> list[dict[str, Any]]:
    """Run ``federation`` with one session per rule, each from the same seed model; a
    record per rule: ``setting``, the attackers, the seed, the rule, the final model's
    score (`Scorer.final`) and ``trigger``'s attack success rate on it."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    began = time.monotonic()
    f = federation
    bad = list(f.attackers)
    spec = FederationSpec(
        app=study.app_spec,
        clients=f.clients,
        combiners=1,  # each rule as defined, over all clients
        partition=f.partition,
        seed=f.seed,
        attacks=dict.fromkeys(bad, f.attack),
    )
    sessions = [
        SessionConfig(rounds=f.rounds, min_clients=f.clients, aggregator=rule, seed=f.seed)
        for rule in rules
    ]
    scorer = Scorer.of(study.app_spec, f.partition, f.clients, f.seed, name)
    records = [
        {
            **setting,
            "malicious": bad,
            "seed": f.seed,
            "rule": result.config.aggregator,
            **scorer.final(result.final, bad),
            "asr": backdoor_success(scorer.app, result.final, trigger),
            **left_out_shares(result.rounds, bad),
        }
        for result in run_sessions(spec, sessions)
    ]
    study.log(
        f"{name}: {f.partition}, {f.attack} on {len(bad)} of {f.clients} clients, seed "
        f"{f.seed}: {len(records)} rules ({time.monotonic() - began:.0f} s)"
    )
    return records


def left_out_shares(rounds: Sequence[RoundSummary], attackers: Sequence[int]) -> dict[str, float]:
    """Of the accepted updates over all ``rounds``, the share the rule left out, for the
    attackers' (``attackers_left_out``) and for the honest clients' (``honest_left_out``);
    NaN where there was none (no attacker). A defence that works leaves out the first and
    keeps the second; a rule that uses every update leaves out neither."""
    bad = {f"client-{i}" for i in attackers}
    counts = {True: [0, 0], False: [0, 0]}  # attacker? -> [left out, accepted]
    for record in rounds:
        for outcome in record.outcomes:
            if outcome["status"] == "ok":
                tally = counts[outcome["client_id"] in bad]
                tally[0] += bool(outcome.get("left_out"))
                tally[1] += 1

    def share(tally: list[int]) -> float:
        return tally[0] / tally[1] if tally[1] else math.nan

    return {"attackers_left_out": share(counts[True]), "honest_left_out": share(counts[False])}


def summarise(
    runs: list[dict[str, Any]],
    keys: Sequence[str],
    metrics: Sequence[str],
    per_round: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per distinct value of ``keys`` (in the runs' order): mean and std over seeds
    of each of ``metrics``, of each round of the ``per_round`` lists, and the honest
    clients' fairness view (means over seeds)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for values, mine in groups.items():
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        row["seeds"] = len(mine)
        for metric in metrics:
            row[metric] = mean_std([float(r[metric]) for r in mine])
        for metric in per_round:
            rounds = zip(*(r[metric] for r in mine), strict=True)
            row[metric] = [mean_std([float(v) for v in values]) for values in rounds]
        row["honest_clients"] = {
            k: mean_std([r["honest_clients"][k] for r in mine])["mean"] for k in FAIRNESS
        }
        rows.append(row)
    return rows


def fairness_table(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """The honest clients' expected accuracies under each row's final model."""
    body = [
        [f"`{r[k]}`" if k in ("rule", "attack") else str(r[k]) for k in keys]
        + [f"{r['honest_clients'][k]:.3f}" for k in FAIRNESS]
        for r in rows
    ]
    return markdown_table([*keys, *FAIRNESS], body)


FAIRNESS_NOTE = (
    "Each honest client's expected accuracy on test data with its own label mix (the "
    "per-class recalls of the final model weighted by its training labels), over the honest "
    "clients: mean, worst, 10th percentile, standard deviation (means over seeds)."
)


def plot_per_round(
    axes: Any,
    rows: Sequence[dict[str, Any]],
    metric: str,
    label: Callable[[dict[str, Any]], str],
) -> None:
    """One line per row: ``metric`` (a per-round list of mean ± std) against the round."""
    for row in rows:
        series = row[metric]
        axes.errorbar(
            range(1, len(series) + 1),
            [s["mean"] for s in series],
            yerr=[s["std"] for s in series],
            marker="o",
            capsize=3,
            label=label(row),
        )
    axes.set_xticks(range(1, max((len(r[metric]) for r in rows), default=0) + 1))
    axes.grid(alpha=0.3)


def plot_bars(
    axes: Any, rules: Sequence[str], groups: Sequence[tuple[str, dict[str, dict[str, float]]]]
) -> None:
    """Grouped bars: for each rule, one bar (mean ± std) per group ``(label, {rule: stats})``."""
    width = 0.8 / len(groups)
    for offset, (label, stats) in enumerate(groups):
        axes.bar(
            [i + offset * width for i in range(len(rules))],
            [stats[rule]["mean"] for rule in rules],
            width,
            yerr=[stats[rule]["std"] for rule in rules],
            label=label,
        )
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(rules))])
    axes.set_xticklabels([r.split(":")[0] for r in rules], rotation=30, fontsize="small")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3, axis="y")
