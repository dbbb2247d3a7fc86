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

from stratafl.aggregate.server_state import model_part
from stratafl.client.app import ClientContext, load_app
from stratafl.params import Params
from stratafl.records import RoundRecord
from stratafl.status import RoundStatus


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
        federated_accuracy=float(pooled.validate(model_part(federated_params), {})["accuracy"]),
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


@dataclass(frozen=True)
class RoundSummary:
    """One round of the report: metrics, participants, traffic and timings."""

    round: int
    status: RoundStatus
    reason: str
    model: str | None
    accuracy: float | None
    loss: float | None
    per_client: dict[str, dict[str, float]]
    participants: list[str]
    outcomes: list[dict[str, Any]]
    bytes_up: int  # both links: clients to combiners, combiners to the controller
    bytes_down: int
    traffic: dict[str, int]
    duration: float
    timings: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_summary(record: RoundRecord) -> RoundSummary:
    """What the report keeps of a round's record."""
    traffic = record.traffic
    return RoundSummary(
        round=record.number,
        status=record.status,
        reason=record.reason,
        model=record.model_out,
        accuracy=record.validation.mean("accuracy"),
        loss=record.validation.mean("loss"),
        per_client=record.validation.per_client,
        participants=record.participants,
        outcomes=[
            o.model_dump(
                include={"client_id", "combiner_id", "status", "reason", "num_examples", "left_out"}
            )
            for o in record.outcomes
        ],
        bytes_up=traffic.clients_up + traffic.combiners_up,
        bytes_down=traffic.clients_down + traffic.combiners_down,
        traffic=traffic.model_dump(),
        duration=record.duration,
        timings=record.timings,
    )
