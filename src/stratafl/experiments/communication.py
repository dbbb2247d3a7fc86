"""Study 9: the bytes a federated session moves against the bytes of data it leaves put.

Federated learning's case for the network: the clients send models, not data. Whether
that moves fewer bytes depends on the model's size, the number of clients and combiners
and the number of rounds, against the size of the data. For each model (the demo MLP
784-128-10 and McMahan et al.'s 2NN 784-200-200-10; with ``--app``, that app alone), one
federation of IID clients runs one session; every round's record gives the bytes moved on
both links (clients and combiners) in both directions. The data the clients hold is
counted as the app holds it (its arrays' dtype) and as the dataset ships it (one byte per
feature and per label, Fashion-MNIST's own files): pooling it once moves that many bytes.
The crossover is the number of rounds after which the session has moved more.

No CNN: McMahan et al.'s CNN (two 5x5 convolutions of 32 and 64 channels, 512 dense
units) takes about 12 M multiply-adds per image against the MLP's 0.1 M, slow in numpy
on two cores; the bytes a model moves depend only on its parameter count, which the two
MLPs already span, so the crossover of any model follows from its size and the copies
per round measured here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stratafl.experiments.evaluation import pooled_app
from stratafl.experiments.output import markdown_table, new_figure, save_figure
from stratafl.experiments.study import (
    DEFAULT_APP,
    QUICK_APP,
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

NAME = "communication"
PARTITION = "iid"
MODELS = {
    Size.QUICK: {
        "MLP 784-128-10": QUICK_APP,
        "2NN 784-200-200-10": "stratafl.apps.fashion_mnist:make_small_2nn_app",
    },
    Size.FULL: {
        "MLP 784-128-10": DEFAULT_APP,
        "2NN 784-200-200-10": "stratafl.apps.fashion_mnist:make_2nn_app",
    },
}
"""The models of each size, by the app that trains each; ``--app`` replaces them."""
LINKS = ("clients_up", "clients_down", "combiners_up", "combiners_down")


@dataclass(frozen=True)
class Scale:
    clients: int
    combiners: int  # 2, so the combiners' link carries traffic of its own
    rounds: int


SCALES = {Size.QUICK: Scale(clients=4, combiners=2, rounds=2), Size.FULL: Scale(10, 2, 20)}


def models(study: StudyRun) -> dict[str, str]:
    return {"app": study.app} if study.app is not None else MODELS[study.size]


def data_bytes(app_spec: str, seed: int) -> dict[str, int]:
    """The training data of all clients: as the app holds it, and at one byte a value."""
    app = pooled_app(app_spec, seed, NAME)
    x_test, _ = app.test_data()
    labels = app.train_labels()
    values = int(np.prod(x_test.shape[1:]))
    return {
        "examples": len(labels),
        "held": len(labels) * (values * x_test.itemsize + labels.itemsize),
        "raw": len(labels) * (values + 1),
    }


def crossover(data: float, per_round: float) -> float:
    """Rounds after which a session has moved more bytes than pooling ``data`` once."""
    return data / per_round if per_round > 0 else math.inf


def run(study: StudyRun) -> dict[str, Any]:
    """Every model with every seed; write results.json, bytes.png and README.md."""
    from stratafl.experiments.sessions import run_sessions  # the tiers: only when running
    from stratafl.launch.federation import FederationSpec

    scale = SCALES[study.size]
    data = {label: data_bytes(spec, study.seeds[0]) for label, spec in models(study).items()}
    started = time.monotonic()
    runs = []
    for label, app_spec in models(study).items():
        for seed in study.seeds:
            began = time.monotonic()
            spec = FederationSpec(
                app=app_spec,
                clients=scale.clients,
                combiners=scale.combiners,
                partition=PARTITION,
                seed=seed,
            )
            session = SessionConfig(rounds=scale.rounds, min_clients=scale.clients, seed=seed)
            (result,) = run_sessions(spec, [session])
            runs.append(
                {
                    "model": label,
                    "seed": seed,
                    "parameters": sum(int(a.size) for a in result.final.values()),
                    "model_bytes": sum(int(a.nbytes) for a in result.final.values()),
                    "traffic_per_round": [
                        {link: r.traffic[link] for link in LINKS} for r in result.rounds
                    ],
                    "accuracy": result.rounds[-1].accuracy,
                }
            )
            study.log(f"{NAME}: {label} seed {seed} ({time.monotonic() - began:.0f} s)")
    results = {
        "study": NAME,
        "size": str(study.size),
        "models": models(study),
        "seeds": list(study.seeds),
        "clients": scale.clients,
        "combiners": scale.combiners,
        "rounds": scale.rounds,
        "partition": PARTITION,
        "settings": [_summary(label, data[label], runs) for label in models(study)],
        "runs": runs,
        **timed(started),
    }
    return study.publish(NAME, results, _plot, _readme)


def _summary(label: str, data: dict[str, int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [r for r in runs if r["model"] == label]
    totals = [sum(sum(t.values()) for t in r["traffic_per_round"]) for r in mine]
    per_round = [sum(t.values()) for r in mine for t in r["traffic_per_round"]]
    model_bytes = mine[0]["model_bytes"]
    mean_round = mean_std([float(b) for b in per_round])
    return {
        "model": label,
        "parameters": mine[0]["parameters"],
        "model_bytes": model_bytes,
        "data": data,
        "session_bytes": mean_std([float(t) for t in totals]),
        "bytes_per_round": mean_round,
        "by_link": {
            link: mean_std([float(t[link]) for r in mine for t in r["traffic_per_round"]])
            for link in LINKS
        },
        "copies_per_round": mean_round["mean"] / model_bytes,
        "ratio_held": mean_std([t / data["held"] for t in totals]),
        "ratio_raw": mean_std([t / data["raw"] for t in totals]),
        "crossover_held": crossover(data["held"], mean_round["mean"]),
        "crossover_raw": crossover(data["raw"], mean_round["mean"]),
        "cumulative": [
            mean_std(
                [float(sum(sum(t.values()) for t in r["traffic_per_round"][:n])) for r in mine]
            )
            for n in range(1, len(mine[0]["traffic_per_round"]) + 1)
        ],
    }


def verdict(crossover_rounds: float) -> str:
    """When a session moves less than pooling the data, in words."""
    if crossover_rounds < 1:
        return "federated training moves more from its first round"
    whole = math.floor(crossover_rounds)
    return (
        f"federated training moves less for sessions of up to {whole} round"
        f"{'s' if whole > 1 else ''}, and more after that"
    )


def _plot(results: dict[str, Any], folder: Path) -> None:
    figure = new_figure()
    (axes,) = figure.axes
    for index, setting in enumerate(results["settings"]):
        colour = f"C{index}"
        cumulative = [c["mean"] / 1e6 for c in setting["cumulative"]]
        axes.plot(range(1, len(cumulative) + 1), cumulative, "o-", c=colour, label=setting["model"])
    data = results["settings"][0]["data"]  # the same clients' data for every model
    for kind, style in (("raw", "--"), ("held", ":")):
        axes.axhline(data[kind] / 1e6, ls=style, c="grey", label=f"pooling the data ({kind})")
    axes.set(xlabel="round", ylabel="MB moved (cumulative)", yscale="log")
    axes.set(title="Session traffic against pooling the data once")
    axes.set_xticks(range(1, results["rounds"] + 1))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    save_figure(figure, folder / "bytes.png")


def _readme(results: dict[str, Any], study: StudyRun) -> str:
    rows = []
    for s in results["settings"]:
        rows.append(
            [
                s["model"],
                f"{s['parameters']:,}",
                f"{s['model_bytes'] / 1e6:.2f}",
                f"{s['bytes_per_round']['mean'] / 1e6:.2f} ({s['copies_per_round']:.1f} copies)",
                pm({k: v / 1e6 for k, v in s["session_bytes"].items()}, 1),
                f"{s['data']['held'] / 1e6:.1f} / {s['data']['raw'] / 1e6:.1f}",
                f"{100 * s['ratio_held']['mean']:.1f} % / {100 * s['ratio_raw']['mean']:.1f} %",
                f"{s['crossover_held']:.1f} / {s['crossover_raw']:.1f}",
            ]
        )
    headers = [
        "model",
        "parameters",
        "model MB",
        "MB per round",
        f"MB per session ({results['rounds']} rounds)",
        "data MB held / raw",
        "session / data",
        "crossover rounds (held / raw)",
    ]
    verdicts = [
        f"- **{s['model']}** on {results['clients']} clients: against the raw data, "
        f"{verdict(s['crossover_raw'])}; against the data as the app holds it, "
        f"{verdict(s['crossover_held'])}."
        for s in results["settings"]
    ]
    return "\n".join(
        [
            f"# {STUDY.title}",
            "",
            f"`{command(NAME, study)}` ({results['size']} size, {results['seconds']:.0f} s, "
            f"finished {results['finished_at']})",
            "",
            f"{results['clients']} {results['partition'].upper()} clients over "
            f"{results['combiners']} combiner(s), {results['rounds']} rounds of FedAvg, seeds "
            f"{results['seeds']}. Bytes as the round records count them: serialized messages "
            "on both links (clients and combiners), both directions, training and "
            "validation. *Copies* = bytes per round / the model's bytes. The data is all "
            "the clients' training examples, as the app holds them (float32 features) and "
            "raw (one byte a feature and a label, as Fashion-MNIST ships). The *crossover* "
            "is data bytes / mean bytes per round: the session length at which federated "
            "training has moved as much as pooling the data once would. Per round, each "
            "client moves a few copies of the model whatever its data, so the crossover "
            "grows with the data each client holds over the model's size: federated "
            "training saves bytes when clients hold much more data than the model weighs.",
            "",
            QUICK_NOTE if study.size is Size.QUICK else "",
            markdown_table(headers, rows),
            "",
            *verdicts,
            "",
            "![bytes moved](bytes.png)",
            "",
        ]
    )


STUDY = Study(
    name=NAME,
    title="Communication: bytes a session moves against the bytes of its clients' data",
    run=run,
)
