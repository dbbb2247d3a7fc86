"""The session report and the promise check.

The promise of federated learning: the federated model performs on par with the same
model trained on the pooled data with the same budget of epochs, and better than any
client could train alone. Both baselines are trained here with the same `ClientApp`, and
all three models are scored on the same full test set.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stratafl.client.app import ClientContext, load_app
from stratafl.params import Params


@dataclass(frozen=True)
class PromiseCheck:
    epochs_budget: int
    centralized_accuracy: float
    federated_accuracy: float
    client_alone_best: float
    client_alone_mean: float
    client_alone: list[float]

    @property
    def gap_to_centralized(self) -> float:
        return self.centralized_accuracy - self.federated_accuracy

    @property
    def gain_over_best_client(self) -> float:
        return self.federated_accuracy - self.client_alone_best

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "gap_to_centralized": self.gap_to_centralized,
            "gain_over_best_client": self.gain_over_best_client,
        }


def baseline_accuracy(
    app_spec: str, context: ClientContext, seed: int, config: Mapping[str, Any]
) -> float:
    """Train from the seed model on ``context``'s data alone; score on the full test set."""
    pooled = load_app(app_spec, ClientContext(client_id="pooled", num_partitions=1, seed=seed))
    app = pooled if context.num_partitions == 1 else load_app(app_spec, context)
    trained = app.train(pooled.initial_params(seed), config).params
    return float(pooled.validate(trained, {})["accuracy"])


def promise_check(
    app_spec: str,
    federated_params: Params,
    *,
    clients: int,
    partition: str,
    seed: int,
    train_config: Mapping[str, Any],
    epochs_budget: int,
    workers: int | None = None,
    on_step: Callable[[str], None] | None = None,
) -> PromiseCheck:
    """Train the centralised and the clients-alone baselines and score all three models.

    The 1 + ``clients`` baselines are independent, so they train in parallel processes
    (one BLAS thread each, so that the processes do not fight over the cores).
    """
    config = {**train_config, "epochs": epochs_budget, "proximal_mu": 0.0}
    contexts = [ClientContext(client_id="pooled", num_partitions=1, seed=seed)] + [
        ClientContext(
            client_id=f"alone-{index}",
            partition_id=index,
            num_partitions=clients,
            partitioner=partition,
            seed=seed,
        )
        for index in range(clients)
    ]
    accuracies: dict[int, float] = {}
    with (
        _single_threaded_blas(),
        ProcessPoolExecutor(
            max_workers=workers or os.cpu_count() or 1, mp_context=mp.get_context("spawn")
        ) as pool,
    ):
        futures = {
            pool.submit(baseline_accuracy, app_spec, context, seed, config): index
            for index, context in enumerate(contexts)
        }
        for future in as_completed(futures):
            accuracies[futures[future]] = future.result()
            if on_step:
                on_step(f"{len(accuracies)} of {len(contexts)} baselines trained")
    pooled = load_app(app_spec, contexts[0])
    alone = [accuracies[i] for i in range(1, len(contexts))]
    return PromiseCheck(
        epochs_budget=epochs_budget,
        centralized_accuracy=accuracies[0],
        federated_accuracy=float(pooled.validate(federated_params, {})["accuracy"]),
        client_alone_best=max(alone),
        client_alone_mean=float(np.mean(alone)),
        client_alone=alone,
    )


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Worker processes read these at start-up; the parent's are restored afterwards."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def round_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """One round of the report: metrics, participants, traffic and timings."""
    validation = row.get("validation") or {}
    traffic = row.get("traffic") or {}
    return {
        "round": row["number"],
        "status": row["status"],
        "reason": row["reason"],
        "model": row["model_out"],
        "accuracy": validation.get("accuracy"),
        "loss": validation.get("loss"),
        "per_client": validation.get("per_client", {}),
        "participants": row["participants"],
        "outcomes": [
            {k: o[k] for k in ("client_id", "combiner_id", "status", "reason", "num_examples")}
            for o in row["outcomes"]
        ],
        "bytes_up": traffic.get("clients_up", 0) + traffic.get("combiners_up", 0),
        "bytes_down": traffic.get("clients_down", 0) + traffic.get("combiners_down", 0),
        "traffic": traffic,
        "duration": row["duration"],
        "timings": row["timings"],
    }
