"""A trivial app for load tests: "training" returns the model plus a little noise.

The default app of `strata swarm`: a cross-device fleet's cost is the protocol's (task push,
model download, upload, fold), not the training's, so this app trains in microseconds and
holds no data. Its model is 17,500 float32 (about 70 kB, a small on-device model) in two
tensors, so the multi-tensor layout is exercised too::

    strata swarm --clients 1000 --app stratafl.apps.noise:make_app

The app keeps no per-client state: one instance serves every client of a swarm process,
and it never writes to the arrays it is given (those are shared between clients).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from stratafl.client.app import ClientContext, Config, TrainResult
from stratafl.errors import ConfigError
from stratafl.params import Params

__all__ = ["DEFAULT_LAYOUT", "NoiseApp", "make_app"]

DEFAULT_LAYOUT: Mapping[str, tuple[int, ...]] = {"w": (125, 136), "b": (500,)}
"""17,000 + 500 = 17,500 float32: the 70 kB model of the clients-per-combiner benchmark."""
NOISE_SCALE = 0.01
"""Standard deviation of the noise added to every weight."""
EXAMPLES = 10
"""The example count every update claims (all clients weigh the same)."""


class NoiseApp:
    """A `ClientApp` whose training adds Gaussian noise of ``scale`` to every weight."""

    def __init__(
        self,
        layout: Mapping[str, tuple[int, ...]] = DEFAULT_LAYOUT,
        *,
        scale: float = NOISE_SCALE,
        seed: int = 0,
    ) -> None:
        if not layout or any(d < 0 for shape in layout.values() for d in shape):
            raise ConfigError(f"NoiseApp needs a non-empty layout of shapes, got {dict(layout)}")
        if not scale >= 0:
            raise ConfigError(f"NoiseApp's noise scale must be >= 0, got {scale}")
        self.layout = dict(layout)
        self.scale = scale
        self._rng = np.random.default_rng(seed)

    def initial_params(self, seed: int) -> Params:
        rng = np.random.default_rng(seed)
        return {
            name: rng.normal(0.0, 0.1, shape).astype(np.float32)
            for name, shape in self.layout.items()
        }

    def train(self, params: Params, config: Config) -> TrainResult:
        """New arrays (the inputs are shared and never written): params + noise."""
        noisy = {
            name: (array + self._rng.normal(0.0, self.scale, array.shape)).astype(array.dtype)
            for name, array in params.items()
        }
        return TrainResult(noisy, num_examples=EXAMPLES, metrics={"noise": self.scale})

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        """The root mean square weight: cheap, and it moves as the model moves."""
        total = sum(float(np.square(a, dtype=np.float64).sum()) for a in params.values())
        count = sum(a.size for a in params.values()) or 1
        return {"rms": (total / count) ** 0.5}


def make_app(context: ClientContext) -> NoiseApp:
    """What ``--app stratafl.apps.noise:make_app`` loads: the default 70 kB layout."""
    return NoiseApp(seed=context.seed * 1_000_003 + context.partition_id)
