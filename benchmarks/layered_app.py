"""The benchmarks' model of many tensors with trivial training (adds 1 in place).

Its own file, importing only stratafl, so that client processes can load it with
``--app benchmarks/layered_app.py:make_app`` (sizes from STRATA_BENCH_PARAMS and
STRATA_BENCH_TENSORS).
"""

from __future__ import annotations

import os

import numpy as np

from stratafl.client.app import TrainResult


class LayeredApp:
    """``tensors`` float32 tensors of ``size`` values in all; training adds 1 in place."""

    def __init__(self, size: int, tensors: int) -> None:
        self.sizes = [len(part) for part in np.array_split(np.arange(size), tensors)]

    def initial_params(self, seed: int) -> dict[str, np.ndarray]:
        return {f"layer{i:03d}": np.zeros(n, np.float32) for i, n in enumerate(self.sizes)}

    def train(self, params, config) -> TrainResult:
        for array in params.values():
            array += 1  # in place: a client holds one copy of the model, not two
        return TrainResult(params, num_examples=1)

    def validate(self, params, config) -> dict[str, float]:
        return {"accuracy": 0.0}


def make_app(context: object) -> LayeredApp:
    """What `strata client start --app benchmarks/layered_app.py:make_app` runs."""
    size, tensors = os.environ["STRATA_BENCH_PARAMS"], os.environ["STRATA_BENCH_TENSORS"]
    return LayeredApp(int(size), int(tensors))
