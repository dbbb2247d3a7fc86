"""The round-latency workload written as a Flower App, with Flower's public API only.

Same work as `benchmarks/round_latency.py`'s TrivialApp: one float32 array of ``params``
weights, every client adds 1 and reports one example, FedAvg over all clients, no
evaluation. The ServerApp times each round from its own side and writes the durations as
JSON to ``timings-file`` (a path the benchmark passes in the run config), or the error
that stopped it, so that the benchmark reads one file instead of parsing logs.
"""

from __future__ import annotations

import json
import os
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()
server = ServerApp()


@client.train()
def train(message: Message, context: Context) -> Message:
    """Add 1 to every weight: the cheapest training that still changes the model."""
    (weights,) = message.content["arrays"].to_numpy_ndarrays()
    reply = RecordDict(
        {
            "arrays": ArrayRecord([weights + np.float32(1)]),
            "metrics": MetricRecord({"num-examples": 1}),
        }
    )
    return Message(content=reply, reply_to=message)


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds; write ``{"round_seconds": [...]}`` or ``{"error": ...}``."""
    config = context.run_config
    output = Path(str(config["timings-file"]))
    try:
        durations = run_rounds(
            grid,
            rounds=int(config["num-rounds"]),
            clients=int(config["num-clients"]),
            params=int(config["params"]),
            node_wait=float(config["node-wait-seconds"]),
        )
    except Exception as error:
        write_json(output, {"error": f"{type(error).__name__}: {error}"})
        raise
    write_json(output, {"round_seconds": durations})


def run_rounds(grid: Grid, rounds: int, clients: int, params: int, node_wait: float) -> list[float]:
    """Wait until every SuperNode is connected (not part of a round), time each round, and
    check that the work was done: every client adds 1, so the average after R rounds is R
    (up to float32 rounding: FedAvg sums weighted terms).

    The strategy calls ``evaluate_fn`` once before the first round and once after each
    round's aggregation; with evaluation switched off, the time between two calls is one
    whole round: sample, send the model, train, receive, aggregate.
    """
    deadline = time.monotonic() + node_wait
    while (connected := len(list(grid.get_node_ids()))) < clients:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {connected} of {clients} SuperNodes connected within {node_wait:g} s"
            )
        time.sleep(0.2)
    ticks: list[float] = []

    def tick(server_round: int, arrays: ArrayRecord) -> None:
        ticks.append(time.monotonic())

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_available_nodes=clients,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(params, np.float32)]),
        num_rounds=rounds,
        evaluate_fn=tick,
    )
    (weights,) = result.arrays.to_numpy_ndarrays()
    if weights.size != params or not np.allclose(weights, rounds, rtol=1e-5):
        raise RuntimeError(
            f"after {rounds} rounds the model should be {rounds} everywhere, "
            f"but it holds {weights.size} values in [{weights.min()}, {weights.max()}]"
        )
    return [later - earlier for earlier, later in pairwise(ticks)]


def write_json(path: Path, payload: dict) -> None:
    """Write whole or not at all: the benchmark may look at the file at any moment."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload))
    partial.replace(path)
