"""SCAFFOLD's control variates (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML): the client's maths and how c travels.

On non-IID data each client's local steps head for its own optimum ("client drift"), so
the average of the local models is not where steps on the global objective lead. SCAFFOLD
corrects every local step with the difference between the server's control variate c (an
estimate of the global gradient) and the client's own c_i (of its local gradient)::

    y <- y - lr * (g_i(y) + c - c_i)                      each of the K local steps
    c_i+ = c_i - c + (x - y_i) / (K * lr)                 option II (Algorithm 1, line 12)
    x+ = x + mean_S(y_i - x)      c+ = c + |S|/N * mean_S(c_i+ - c_i)      the server

How c travels: inside the global model, as one tensor ``scaffold.c/<name>`` beside every
floating-point tensor ``<name>`` (integer tensors have no gradient and no control
variate). A client sends its trained y_i and, under the control-variate names,
``c + f * (c_i+ - c_i)`` with f = |S|/N the round's participation fraction. FedAvg's
weighted mean of those updates is then x+ = mean(y_i) and c+ = c + f * mean(c_i+ - c_i):
the server's update of c is FedAvg's own mean, so it is exact across any number of
combiners and no aggregation rule changes. The means are weighted by example counts, as
FedAvg's objective sum_i n_i F_i / n is (the paper's uniform means are the case of equal
counts); under full participation with fixed counts c stays the weighted mean of the c_i.

Everything here is a pure function of named arrays: inputs are never modified, arithmetic
is float64 and results take each tensor's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from stratafl.aggregate.server_state import (
    SCAFFOLD_PREFIX,
    as_f64,
    cast_like,
    check_participation,
    split_state,
    with_zero_state,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

CONTROL_PREFIX = SCAFFOLD_PREFIX
"""Tensor names under this prefix are SCAFFOLD's server control variate, not the model."""
SETTING = "drift_correction='scaffold'"

Arrays = Mapping[str, np.ndarray]


def control_name(name: str) -> str:
    """The name of the control variate of model tensor ``name``."""
    return CONTROL_PREFIX + name


def with_zero_control(params: Arrays) -> Params:
    """The model part of ``params`` and a zero control variate per floating-point tensor:
    SCAFFOLD's start."""
    return with_zero_state(params, CONTROL_PREFIX)


def split_control(params: Arrays) -> tuple[Params, Params]:
    """``(model, c)`` of a global model, ``c`` keyed by the model tensor's name; raises
    `ConfigError` unless every floating-point tensor, and only those, has a control
    variate of its own shape and dtype."""
    return split_state(params, CONTROL_PREFIX, setting=SETTING)


def local_correction(c: Arrays, c_i: Arrays) -> Params:
    """``c - c_i`` per tensor: what each local step adds to its gradient."""
    check_same_layout(specs_of(c), specs_of(c_i))
    return {name: cast_like(as_f64(value) - as_f64(c_i[name]), value) for name, value in c.items()}


def updated_client_control(
    c_i: Arrays, c: Arrays, x: Arrays, y: Arrays, *, steps: int, lr: float
) -> Params:
    """Option II: ``c_i+ = c_i - c + (x - y) / (steps * lr)`` per control-variate tensor.

    ``x`` is the model the client received, ``y`` the one it trained in ``steps`` local
    SGD steps of learning rate ``lr`` (for a schedule, pass the mean rate: K * lr is the
    sum of the steps' rates). Reuses the gradients training computed, so it costs no pass.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ConfigError(
            f"SCAFFOLD's option II needs the number of local steps K >= 1, got {steps!r}; "
            "report the SGD steps train_corrected took (a client with no data cannot run it)"
        )
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"SCAFFOLD's option II needs the local lr > 0, got {lr!r}")
    check_same_layout(specs_of(c), specs_of(c_i))
    check_same_layout(specs_of(x), specs_of(y))
    scale = 1.0 / (steps * lr)
    new: Params = {}
    for name, value in c.items():
        drift = (as_f64(x[name]) - as_f64(y[name])) * scale
        new[name] = cast_like(as_f64(c_i[name]) - as_f64(value) + drift, value)
    return new


def client_update(
    global_params: Arrays, trained: Arrays, c_i: Arrays, c_i_new: Arrays, fraction: float
) -> Params:
    """What a client sends: ``trained`` and, under each control-variate name,
    ``c + fraction * (c_i+ - c_i)``, in the global model's tensor order.

    ``fraction`` is the round's participation |S|/N in (0, 1] (1 with every client taking
    part); the FedAvg of these updates is the server's SCAFFOLD step (module docstring).
    """
    check_participation(fraction, "SCAFFOLD")
    model, c = split_control(global_params)
    check_same_layout(specs_of(model), specs_of(trained))
    check_same_layout(specs_of(c), specs_of(c_i))
    check_same_layout(specs_of(c), specs_of(c_i_new))
    update: Params = {}
    for name, value in global_params.items():
        if not name.startswith(CONTROL_PREFIX):
            update[name] = np.asarray(trained[name])
            continue
        tensor = name.removeprefix(CONTROL_PREFIX)
        moved = as_f64(value) + fraction * (as_f64(c_i_new[tensor]) - as_f64(c_i[tensor]))
        update[name] = cast_like(moved, value)
    return update
