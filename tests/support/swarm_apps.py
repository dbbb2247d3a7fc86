"""A small drift-correctable app for swarm sessions with SCAFFOLD or FedDyn; swarm
processes load this file by path.

Each client pulls the model towards its own target (a quadratic loss, so its local step is
exact), and it refuses any tensor it does not own: a client that handed it the server's
state (SCAFFOLD's c, FedDyn's h) instead of the model fails the task, which the test sees.
It never writes to the arrays it is given (a swarm process shares them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stratafl.client.app import ClientContext, Config, TrainResult
from stratafl.client.scaffold import CorrectedTraining
from stratafl.params import Params

LAYOUT: Mapping[str, tuple[int, ...]] = {"w": (64,), "b": (4,)}
LR = 0.1
EXAMPLES = 10


class PullApp:
    """Local training is one gradient step of ``0.5 * |params - target|**2``."""

    def __init__(self, context: ClientContext) -> None:
        rng = np.random.default_rng(context.partition_id)
        self.target = {
            name: rng.normal(0.0, 1.0, shape).astype(np.float32) for name, shape in LAYOUT.items()
        }

    def initial_params(self, seed: int) -> Params:
        return {name: np.zeros(shape, np.float32) for name, shape in LAYOUT.items()}

    def train(self, params: Params, config: Config) -> TrainResult:
        return self.train_corrected(params, config, {}).result

    def train_corrected(
        self, params: Params, config: Config, correction: Params
    ) -> CorrectedTraining:
        _check_layout(params)
        new = {}
        for name, value in params.items():
            gradient = value - self.target[name] + correction.get(name, 0.0)
            new[name] = (value - LR * gradient).astype(value.dtype)
        return CorrectedTraining(TrainResult(new, EXAMPLES, {"lr": LR}), steps=1, lr=LR)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        _check_layout(params)
        loss = sum(float(np.square(params[k] - self.target[k]).sum()) for k in LAYOUT)
        return {"loss": 0.5 * loss}


def _check_layout(params: Params) -> None:
    if set(params) != set(LAYOUT):
        raise ValueError(f"PullApp owns tensors {sorted(LAYOUT)}, was given {sorted(params)}")


def make_app(context: ClientContext) -> PullApp:
    return PullApp(context)
