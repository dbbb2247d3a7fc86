"""The adaptive server optimisers of Reddi et al. 2021 ("Adaptive Federated Optimization",
ICLR): FedAdagrad, FedAdam and FedYogi, one shared step with three second-moment rules.

Pure functions of (global, merged, state), like every optimiser in `server_opt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stratafl.aggregate.server_opt import (
    Arrays,
    ServerOptState,
    check_decay,
    check_lr,
    check_pair,
    check_state_names,
    is_float,
    moment,
    state_dtype,
)
from stratafl.errors import ConfigError
from stratafl.params import Params


def _check_adaptive(name: str, server_lr: float, tau: float, **decays: float) -> None:
    check_lr(name, server_lr)
    for key, value in decays.items():
        check_decay(name, key, value)
    if not (math.isfinite(tau) and tau > 0):
        raise ConfigError(f"{name}: tau={tau} must be a positive number (adaptivity, e.g. 1e-3)")


def _adaptive_step(
    global_params: Arrays,
    merged: Arrays,
    state: ServerOptState,
    *,
    server_lr: float,
    beta1: float,
    tau: float,
    second_moment: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[Params, ServerOptState]:
    """The step shared by FedAdagrad, FedAdam and FedYogi (Reddi et al. 2021, Algorithm 2):

        m_t = beta1 m_{t-1} + (1 - beta1) delta_t
        v_t = second_moment(v_{t-1}, delta_t^2)
        x_{t+1} = x_t + server_lr * m_t / (sqrt(v_t) + tau)

    with m_{-1} = 0 and v_{-1} = tau^2 (the paper asks v_{-1} >= tau^2), no bias correction.
    """
    check_pair(global_params, merged)
    check_state_names(state, global_params)
    new: Params = {}
    m_new: Params = {}
    v_new: Params = {}
    for name, current in global_params.items():
        if not is_float(current):
            new[name] = np.array(merged[name])
            continue
        x = np.asarray(current, dtype=np.float64)
        delta = np.asarray(merged[name], dtype=np.float64) - x
        m = beta1 * moment(state.m, name, x, 0.0) + (1.0 - beta1) * delta
        v = second_moment(moment(state.v, name, x, tau**2), np.square(delta))
        new[name] = (x + server_lr * m / (np.sqrt(v) + tau)).astype(np.asarray(current).dtype)
        m_new[name] = m.astype(state_dtype(current))
        v_new[name] = v.astype(state_dtype(current))
    return new, ServerOptState(step=state.step + 1, m=m_new, v=v_new)


@dataclass(frozen=True)
class FedAdagrad:
    """FedAdagrad (Reddi et al. 2021): ``v_t = v_{t-1} + delta_t^2``, then the shared
    adaptive step (see `_adaptive_step`). beta1 defaults to 0: classic Adagrad, no momentum.
    """

    name: ClassVar[str] = "fedadagrad"
    stateful: ClassVar[bool] = True

    server_lr: float = 0.1
    beta1: float = 0.0
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_adaptive(self.name, self.server_lr, self.tau, beta1=self.beta1)

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        return _adaptive_step(
            global_params,
            merged,
            state,
            server_lr=self.server_lr,
            beta1=self.beta1,
            tau=self.tau,
            second_moment=lambda v, delta_sq: v + delta_sq,
        )


@dataclass(frozen=True)
class FedAdam:
    """FedAdam (Reddi et al. 2021): ``v_t = beta2 v_{t-1} + (1 - beta2) delta_t^2``, then
    the shared adaptive step (see `_adaptive_step`)."""

    name: ClassVar[str] = "fedadam"
    stateful: ClassVar[bool] = True

    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_adaptive(self.name, self.server_lr, self.tau, beta1=self.beta1, beta2=self.beta2)

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        beta2 = self.beta2
        return _adaptive_step(
            global_params,
            merged,
            state,
            server_lr=self.server_lr,
            beta1=self.beta1,
            tau=self.tau,
            second_moment=lambda v, delta_sq: beta2 * v + (1.0 - beta2) * delta_sq,
        )


@dataclass(frozen=True)
class FedYogi:
    """FedYogi (Reddi et al. 2021; Zaheer et al. 2018):
    ``v_t = v_{t-1} - (1 - beta2) delta_t^2 sign(v_{t-1} - delta_t^2)``, then the shared
    adaptive step (see `_adaptive_step`). v moves additively towards delta^2, so it grows
    less abruptly than Adam's when the pseudo-gradient jumps."""

    name: ClassVar[str] = "fedyogi"
    stateful: ClassVar[bool] = True

    server_lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        _check_adaptive(self.name, self.server_lr, self.tau, beta1=self.beta1, beta2=self.beta2)

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        beta2 = self.beta2
        return _adaptive_step(
            global_params,
            merged,
            state,
            server_lr=self.server_lr,
            beta1=self.beta1,
            tau=self.tau,
            second_moment=lambda v, delta_sq: v - (1.0 - beta2) * delta_sq * np.sign(v - delta_sq),
        )
