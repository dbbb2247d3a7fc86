"""FedDyn's dynamic regulariser (Acar et al. 2021, "Federated Learning Based on Dynamic
Regularization", ICLR): the client's maths and how the server state h travels.

SCAFFOLD corrects each local step with an estimate of the drift; FedDyn changes what each
client minimises instead, so that the clients' optima agree with the global one. Client i
keeps g_i (the gradient of its loss at its last local model; zero at the start) and solves

    min_θ  L_i(θ) - <g_i, θ> + α/2 ||θ - θ_server||²                    (its local steps)
    g_i+ = g_i - α (θ_i - θ_server)                                      (after them)

and the server keeps h, the running mean of those gradients (Algorithm 1)::

    h+ = h - α/N * sum_{i in S} (θ_i - θ_server)
    θ_server+ = mean_S(θ_i) - h+ / α

How that becomes FedAvg: h rides in the global model as ``feddyn.h/<name>`` beside every
floating-point tensor (`stratafl.aggregate.server_state`), and a client with f = |S|/N sends

    h_i' = h - α f (θ_i - θ_server)        under the h names
    θ_i' = θ_i - h_i' / α                  under the model names

whose weighted mean is exactly h+ and θ_server+: the server's step is FedAvg's own mean,
exact across any number of combiners, and no rule changes. Means are weighted by example
counts, as FedAvg's objective is (the paper's uniform means are equal counts). On the
client the linear term is a fixed gradient correction ``-g_i`` and the quadratic one is
FedProx's proximal term with mu = α, so any app that takes a correction
(`stratafl.client.scaffold.DriftCorrectableApp`) runs FedDyn.

Everything here is a pure function of named arrays: inputs are never modified, arithmetic
is float64 and results take each tensor's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from stratafl.aggregate.server_state import (
    FEDDYN_PREFIX,
    as_f64,
    cast_like,
    check_participation,
    split_state,
)
from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

SETTING = "drift_correction='feddyn'"

Arrays = Mapping[str, np.ndarray]


def state_name(name: str) -> str:
    """The name of the server state h of model tensor ``name``."""
    return FEDDYN_PREFIX + name


def split_dynamic(params: Arrays) -> tuple[Params, Params]:
    """``(model, h)`` of a global model, ``h`` keyed by the model tensor's name; raises
    `ConfigError` unless every floating-point tensor, and only those, has its h."""
    return split_state(params, FEDDYN_PREFIX, setting=SETTING)


def local_correction(g_i: Arrays) -> Params:
    """``-g_i`` per tensor: the linear term's gradient, added to every local step's."""
    return {name: cast_like(-as_f64(value), value) for name, value in g_i.items()}


def updated_client_gradient(g_i: Arrays, x: Arrays, y: Arrays, *, alpha: float) -> Params:
    """``g_i+ = g_i - alpha * (y - x)`` per tensor of ``g_i``: ``x`` is the model the client
    received, ``y`` the one it trained."""
    _check_alpha(alpha)
    check_same_layout(specs_of(x), specs_of(y))
    return {
        name: cast_like(as_f64(value) - alpha * (as_f64(y[name]) - as_f64(x[name])), value)
        for name, value in g_i.items()
    }


def client_update(
    global_params: Arrays, trained: Arrays, *, alpha: float, fraction: float
) -> Params:
    """What a client sends: ``θ_i - h_i'/alpha`` under the model names and
    ``h_i' = h - alpha * fraction * (θ_i - θ)`` under the h names, in the global model's
    tensor order (integer tensors as trained). ``fraction`` is the round's participation
    |S|/N in (0, 1]; the FedAvg of these updates is FedDyn's server step (module docstring).
    """
    _check_alpha(alpha)
    check_participation(fraction, "FedDyn")
    model, h = split_dynamic(global_params)
    check_same_layout(specs_of(model), specs_of(trained))
    moved = {
        name: as_f64(value) - alpha * fraction * (as_f64(trained[name]) - as_f64(model[name]))
        for name, value in h.items()
    }
    update: Params = {}
    for name, value in global_params.items():
        if name.startswith(FEDDYN_PREFIX):
            update[name] = cast_like(moved[name.removeprefix(FEDDYN_PREFIX)], value)
        elif name in moved:
            update[name] = cast_like(as_f64(trained[name]) - moved[name] / alpha, value)
        else:
            update[name] = np.asarray(trained[name])
    return update


def _check_alpha(alpha: float) -> None:
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"FedDyn's alpha must be a number > 0, got {alpha!r}")
