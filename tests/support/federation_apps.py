"""Small client apps for the process-level tests; client processes load this file by path.

Behaviour is steered by environment variables, which the launcher passes on to the
processes it starts:
    STRATA_TEST_PARAMS       number of float32 parameters (default 1000)
    STRATA_TEST_TRAIN_SECONDS  how long train() takes (default 0)
    STRATA_TEST_MARKERS      a folder; train() touches <folder>/<client_id>.training
    STRATA_TEST_POISON       a client id whose update holds NaN
    STRATA_TEST_BOOST        a client id whose shift is multiplied by 100 (model poisoning)
    STRATA_TEST_SLOW         a client id that takes 30 s more to train (a straggler)
    STRATA_TEST_INFLATE      a client id that claims 2**62 examples (a weight attack)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from stratafl.client.app import ClientContext, Config, TrainResult
from stratafl.params import Params


class ShiftApp:
    """Training adds (partition_id + 1) to every weight: FedAvg of that is easy to predict."""

    def __init__(self, context: ClientContext) -> None:
        self.context = context
        self.size = int(os.environ.get("STRATA_TEST_PARAMS", "1000"))

    def initial_params(self, seed: int) -> Params:
        return {"w": np.zeros(self.size, np.float32), "b": np.zeros(3, np.float32)}

    def train(self, params: Params, config: Config) -> TrainResult:
        markers = os.environ.get("STRATA_TEST_MARKERS")
        if markers:
            Path(markers, f"{self.context.client_id}.training").touch()
        time.sleep(float(os.environ.get("STRATA_TEST_TRAIN_SECONDS", "0")))
        if os.environ.get("STRATA_TEST_SLOW") == self.context.client_id:
            time.sleep(30)
        shift = np.float32(self.context.partition_id + 1)
        if os.environ.get("STRATA_TEST_BOOST") == self.context.client_id:
            shift *= 100
        new = {name: array + shift for name, array in params.items()}
        if os.environ.get("STRATA_TEST_POISON") == self.context.client_id:
            new["w"] = new["w"].copy()
            new["w"][0] = np.nan
        examples = 10 * (self.context.partition_id + 1)
        if os.environ.get("STRATA_TEST_INFLATE") == self.context.client_id:
            examples = 2**62
        return TrainResult(new, num_examples=examples, metrics={"shift": float(shift)})

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        """``mean_w`` is the model's mean weight (a test's check of the round's scores);
        ``accuracy`` a rate made of it, in [0, 1] as every rate must be."""
        mean = float(np.mean(params["w"]))
        return {
            "mean_w": mean,
            "accuracy": 1.0 / (1.0 + abs(mean)),
            "loss": 0.0,
            "num_examples": 1.0,
        }


def make_app(context: ClientContext) -> ShiftApp:
    return ShiftApp(context)


class RecordingApp:
    """`ShiftApp` that also writes what it was given to ``<data_path>/seen.json``: the
    site's settings and data path from its context, and each task's config (the session's
    app settings arrive there), so a test sees what reached the app and with which types."""

    def __init__(self, context: ClientContext) -> None:
        if context.data_path is None:
            raise ValueError("RecordingApp needs a data path (data_path in the site file)")
        self.inner = ShiftApp(context)
        self.record = context.data_path / "seen.json"
        self.seen: dict[str, object] = {
            "data_path": str(context.data_path),
            "settings": dict(context.settings),
        }

    def initial_params(self, seed: int) -> Params:
        return self.inner.initial_params(seed)

    def _keep(self, kind: str, config: Config) -> None:
        self.seen[kind] = dict(config)
        self.record.write_text(json.dumps(self.seen))

    def train(self, params: Params, config: Config) -> TrainResult:
        self._keep("train", config)
        return self.inner.train(params, config)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        self._keep("validate", config)
        return self.inner.validate(params, config)


def make_recording_app(context: ClientContext) -> RecordingApp:
    return RecordingApp(context)
