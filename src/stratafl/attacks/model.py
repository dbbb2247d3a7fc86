"""Model poisoning: a malicious client trains honestly, then changes the update it sends.

Each attack is a pure function of the global model the client received and the model it
trained, ``poison(global_params, trained, seed) -> params``; the update is
``trained - global_params``. Only floating-point tensors are changed (integer tensors pass
through), every result keeps the tensor's dtype, and no input is modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

MAX_FACTOR = 1e6
"""Largest scaling factor a spec may ask for: beyond it a float32 model overflows to Inf."""
MAX_STD = 1e6
"""Largest noise standard deviation a spec may ask for, for the same reason."""


def _check_positive(name: str, key: str, value: float, bound: float) -> None:
    if not (math.isfinite(value) and 0 < value <= bound):
        raise ConfigError(f"{name}: {key}={value!r} must be a number in (0, {bound:g}]")


def _map_update(
    global_params: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    change: Callable[[str, np.ndarray], np.ndarray],
) -> Params:
    """``global + change(name, update)`` per floating-point tensor, in float64, cast back."""
    check_same_layout(specs_of(global_params), specs_of(trained))
    out: Params = {}
    for name, value in trained.items():
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating):
            out[name] = value.copy()
            continue
        base = np.asarray(global_params[name], dtype=np.float64)
        update = value.astype(np.float64) - base
        out[name] = (base + change(name, update)).astype(value.dtype)
    return out


@dataclass(frozen=True, kw_only=True)
class ScaleUpdate:
    """Model replacement by boosting (Bagdasaryan et al. 2020, "How To Backdoor Federated
    Learning"): send ``global + factor * update``.

    With ``factor = gamma = n / eta`` (n clients, server learning rate eta; with FedAvg and
    eta = 1, the number of clients) the attacker's model replaces the global model after
    averaging, as far as the other updates nearly cancel out. Paired with a backdoor it makes
    the backdoor survive; alone it shows how far one client can pull an undefended mean.
    """

    name: ClassVar[str] = "scale"
    factor: float = 10.0

    def __post_init__(self) -> None:
        _check_positive(self.name, "factor", self.factor, MAX_FACTOR)

    def poison(
        self, global_params: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], seed: int
    ) -> Params:
        return _map_update(global_params, trained, lambda _, update: self.factor * update)


@dataclass(frozen=True, kw_only=True)
class SignFlip:
    """Sign flipping: send ``global - factor * update``, a step up the loss instead of down.

    A standard Byzantine baseline of the robust-aggregation literature (e.g. Fang et al.
    2020, "Local Model Poisoning Attacks to Byzantine-Robust Federated Learning", and
    Karimireddy et al. 2021); ``factor`` > 1 makes it harder for a plain mean to absorb.
    """

    name: ClassVar[str] = "sign_flip"
    factor: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self.name, "factor", self.factor, MAX_FACTOR)

    def poison(
        self, global_params: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], seed: int
    ) -> Params:
        return _map_update(global_params, trained, lambda _, update: -self.factor * update)


@dataclass(frozen=True, kw_only=True)
class GaussianNoise:
    """Gaussian noise instead of an update: send ``global + N(0, std^2 I)``.

    The Gaussian Byzantine client of Blanchard et al. 2017 ("Machine Learning with
    Adversaries: Byzantine Tolerant Gradient Descent"), used as a baseline attack by Fang
    et al. 2020. The noise is drawn from ``(seed, round seed)``, so a run is reproducible
    and each round's noise is fresh.
    """

    name: ClassVar[str] = "noise"
    std: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self.name, "std", self.std, MAX_STD)
        if self.seed < 0:
            raise ConfigError(f"noise: seed={self.seed} must be >= 0")

    def poison(
        self, global_params: Mapping[str, np.ndarray], trained: Mapping[str, np.ndarray], seed: int
    ) -> Params:
        rng = np.random.default_rng([self.seed, max(0, seed)])
        return _map_update(
            global_params, trained, lambda _, update: rng.normal(0.0, self.std, update.shape)
        )


UpdateAttack = ScaleUpdate | SignFlip | GaussianNoise
