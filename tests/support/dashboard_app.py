"""The dashboard test's client app: real learning (Fashion-MNIST, the small subset) with
training slowed down, so a browser can watch rounds close one by one. Client processes
load this file by path; ``STRATA_TEST_TRAIN_SECONDS`` (default 1) is the pause per task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from stratafl.apps.fashion_mnist import make_small_app
from stratafl.client.app import ClientApp, ClientContext, Config, TrainResult
from stratafl.params import Params


class SlowApp:
    """Any app, with a pause before each training task."""

    def __init__(self, inner: ClientApp, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds

    def initial_params(self, seed: int) -> Params:
        return self.inner.initial_params(seed)

    def train(self, params: Params, config: Config) -> TrainResult:
        time.sleep(self.seconds)
        return self.inner.train(params, config)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        return self.inner.validate(params, config)


def make_app(context: ClientContext) -> SlowApp:
    seconds = float(os.environ.get("STRATA_TEST_TRAIN_SECONDS", "1"))
    return SlowApp(make_small_app(context), seconds)
