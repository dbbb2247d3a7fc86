"""The session report and the promise check.

The promise of federated learning: the federated model performs on par with the same
model trained on the pooled data with the same budget of epochs, and better than any
client could train alone. Both baselines are trained here with the same `ClientApp`, and
all three models are scored on the same full test set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def promise_check(
    app_spec: str,
    federated_params: Params,
    *,
    clients: int,
    partition: str,
    seed: int,
    train_config: Mapping[str, Any],
    epochs_budget: int,
    on_step: Callable[[str], None] | None = None,
) -> PromiseCheck:
    """Train the centralised and the clients-alone baselines and score all three models."""
    pooled = load_app(app_spec, ClientContext(client_id="pooled", num_partitions=1, seed=seed))
    initial = pooled.initial_params(seed)
    config = {**train_config, "epochs": epochs_budget, "proximal_mu": 0.0}

    def accuracy(params: Params) -> float:
        return float(pooled.validate(params, {})["accuracy"])

    if on_step:
        on_step("centralized baseline")
    centralized = accuracy(pooled.train(initial, config).params)
    alone: list[float] = []
    for index in range(clients):
        if on_step:
            on_step(f"client {index} alone")
        context = ClientContext(
            client_id=f"alone-{index}",
            partition_id=index,
            num_partitions=clients,
            partitioner=partition,
            seed=seed,
        )
        alone.append(accuracy(load_app(app_spec, context).train(initial, config).params))
    return PromiseCheck(
        epochs_budget=epochs_budget,
        centralized_accuracy=centralized,
        federated_accuracy=accuracy(federated_params),
        client_alone_best=max(alone),
        client_alone_mean=float(np.mean(alone)),
        client_alone=alone,
    )


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
