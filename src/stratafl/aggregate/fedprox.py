"""FedProx helpers for client apps (Li et al. 2020, "Federated Optimization in
Heterogeneous Networks", MLSys).

FedProx adds a proximal term to each client's local objective,

    h(w) = F_k(w) + mu/2 * ||w - w_g||^2,

which keeps local models near the global model w_g the round started from and so damps
client drift on non-IID data. The server side is unchanged (FedAvg). A client app adds
`proximal_term` to its loss (for logging) and `proximal_gradient` to its gradient; ``mu``
comes from the session config (mu = 0 is FedAvg; Li et al. try 0.001 to 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of


def _check(
    params: Mapping[str, np.ndarray], global_params: Mapping[str, np.ndarray], mu: float
) -> None:
    if not (math.isfinite(mu) and mu >= 0):
        raise ConfigError(f"FedProx mu={mu} must be a number >= 0, e.g. 0.01 (0 is FedAvg)")
    check_same_layout(specs_of(global_params), specs_of(params))


def proximal_term(
    params: Mapping[str, np.ndarray], global_params: Mapping[str, np.ndarray], mu: float
) -> float:
    """``mu/2 * ||w - w_g||^2`` summed over all tensors."""
    _check(params, global_params, mu)
    total = 0.0
    for name, value in params.items():
        diff = np.asarray(value, dtype=np.float64) - np.asarray(
            global_params[name], dtype=np.float64
        )
        total += float(np.dot(diff.reshape(-1), diff.reshape(-1)))
    return 0.5 * mu * total


def proximal_gradient(
    params: Mapping[str, np.ndarray], global_params: Mapping[str, np.ndarray], mu: float
) -> Params:
    """``mu * (w - w_g)`` per tensor, in each tensor's dtype: add it to the loss gradient."""
    _check(params, global_params, mu)
    return {
        name: (
            mu
            * (
                np.asarray(value, dtype=np.float64)
                - np.asarray(global_params[name], dtype=np.float64)
            )
        ).astype(np.asarray(value).dtype)
        for name, value in params.items()
    }
