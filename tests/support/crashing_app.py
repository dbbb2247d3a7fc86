"""A client app whose ``train`` raises: what a person's buggy app does to `strata run`.

Loaded by path in each client process (``tests/support/crashing_app.py:make_app``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stratafl.client.app import ClientContext, Config, TrainResult
from stratafl.params import Params


class CrashingApp:
    def __init__(self, context: ClientContext) -> None:
        self.context = context

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(10, np.float32)}

    def train(self, params: Params, config: Config) -> TrainResult:
        raise RuntimeError(f"{self.context.client_id} crashed in train on purpose")

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        return {"accuracy": 0.0, "loss": 0.0}


def make_app(context: ClientContext) -> CrashingApp:
    return CrashingApp(context)
