"""Server optimisers on the pseudo-gradient (Reddi et al. 2021, "Adaptive Federated
Optimization", ICLR; Hsu et al. 2019, "Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification" for FedAvgM).

The reducer treats the round's merged model as one step of a gradient method:

    delta_t = merged_t - x_t                        (pseudo-gradient, a descent direction)
    x_{t+1} = x_t + server step(delta_t, state)

Each optimiser is a pure function ``step(global, merged, state) -> (new, new_state)``: the
state (m, v, t) is held in `ServerOptState`, which converts to and from named arrays so the
runtime can store it next to the model (e.g. a safetensors file) and restore it after a
controller restart. Only floating-point tensors are optimised; any other tensor (an integer
counter, a boolean mask) takes the merged value as is. Arithmetic is float64; m and v are
kept in the tensor's dtype promoted to at least float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ServerOptState:
    """Optimiser state across rounds: ``step`` t (rounds applied), first moment ``m`` and
    second moment ``v``, each keyed by tensor name (empty until the first step)."""

    step: int = 0
    m: Params = field(default_factory=dict)
    v: Params = field(default_factory=dict)

    def to_arrays(self) -> Params:
        """Named arrays ``step``, ``m/<tensor>``, ``v/<tensor>``: storable as safetensors."""
        arrays: Params = {"step": np.array(self.step, dtype=np.int64)}
        arrays.update({f"m/{name}": value for name, value in self.m.items()})
        arrays.update({f"v/{name}": value for name, value in self.v.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Arrays) -> ServerOptState:
        """The inverse of `to_arrays`."""
        if "step" not in arrays:
            raise ConfigError(
                "server optimiser state has no 'step' array; pass what to_arrays() produced"
            )
        moments: dict[str, Params] = {"m": {}, "v": {}}
        for key, value in arrays.items():
            if key == "step":
                continue
            kind, _, name = key.partition("/")
            if kind not in moments or not name:
                raise ConfigError(
                    f"server optimiser state holds unexpected array {key!r}; "
                    "expected 'step', 'm/<tensor>' or 'v/<tensor>'"
                )
            moments[kind][name] = np.array(value)
        return cls(step=int(np.asarray(arrays["step"])), m=moments["m"], v=moments["v"])


class ServerOptimizer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def stateful(self) -> bool:
        """True if its state (m, v, t) must be kept with each model to resume a session."""
        ...

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        """The next global model and state; no argument is modified."""
        ...


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(array).dtype, np.floating)


def state_dtype(array: np.ndarray) -> np.dtype:
    return np.promote_types(np.asarray(array).dtype, np.float32)


def check_pair(global_params: Arrays, merged: Arrays) -> None:
    check_same_layout(specs_of(global_params), specs_of(merged))


def moment(state_part: Params, name: str, like: np.ndarray, fill: float) -> np.ndarray:
    """The stored moment for ``name`` in float64, or ``fill`` everywhere on the first step."""
    if name in state_part:
        stored = np.asarray(state_part[name])
        if stored.shape != like.shape:
            raise ConfigError(
                f"server optimiser state for {name!r} has shape {list(stored.shape)} but the "
                f"model has {list(like.shape)}; start from a fresh ServerOptState() when the "
                "model's layout changes"
            )
        return stored.astype(np.float64)
    return np.full(like.shape, fill, dtype=np.float64)


def check_state_names(state: ServerOptState, global_params: Arrays) -> None:
    floats = {name for name, array in global_params.items() if is_float(array)}
    for part_name, part in (("m", state.m), ("v", state.v)):
        if part and set(part) != floats:
            raise ConfigError(
                f"server optimiser state {part_name} covers tensors {sorted(part)} but the "
                f"model's float tensors are {sorted(floats)}; start from a fresh "
                "ServerOptState() when the model's layout changes"
            )


def check_lr(name: str, server_lr: float) -> None:
    if not (math.isfinite(server_lr) and server_lr > 0):
        raise ConfigError(f"{name}: server_lr={server_lr} must be a positive number, e.g. 0.01")


def check_decay(name: str, key: str, value: float) -> None:
    if not (0.0 <= value < 1.0):
        raise ConfigError(f"{name}: {key}={value} must be in [0, 1), e.g. 0.9")


@dataclass(frozen=True)
class ServerAverage:
    """No server optimiser: ``x_{t+1} = merged`` (FedAvg; SGD with server_lr 1)."""

    name: ClassVar[str] = "fedavg"
    stateful: ClassVar[bool] = False

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        check_pair(global_params, merged)
        new = {name: np.array(value) for name, value in merged.items()}
        return new, ServerOptState(step=state.step + 1)


@dataclass(frozen=True)
class FedAvgM:
    """Server momentum (Hsu et al. 2019):

        m_t = momentum * m_{t-1} + delta_t,   x_{t+1} = x_t + server_lr * m_t

    with m_{-1} = 0. server_lr = 1, momentum = 0 is FedAvg.
    """

    name: ClassVar[str] = "fedavgm"
    stateful: ClassVar[bool] = True

    server_lr: float = 1.0
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_lr(self.name, self.server_lr)
        check_decay(self.name, "momentum", self.momentum)

    def step(
        self, global_params: Arrays, merged: Arrays, state: ServerOptState
    ) -> tuple[Params, ServerOptState]:
        check_pair(global_params, merged)
        check_state_names(state, global_params)
        new: Params = {}
        m_new: Params = {}
        for name, current in global_params.items():
            if not is_float(current):
                new[name] = np.array(merged[name])
                continue
            x = np.asarray(current, dtype=np.float64)
            delta = np.asarray(merged[name], dtype=np.float64) - x
            m = self.momentum * moment(state.m, name, x, 0.0) + delta
            new[name] = (x + self.server_lr * m).astype(np.asarray(current).dtype)
            m_new[name] = m.astype(state_dtype(current))
        return new, ServerOptState(step=state.step + 1, m=m_new)
