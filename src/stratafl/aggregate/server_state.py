"""Server state that travels inside the global model, beside the tensors it belongs to.

Drift correction keeps a server-side tensor per model tensor: SCAFFOLD's control variate c
(`stratafl.aggregate.scaffold`), FedDyn's h (`stratafl.aggregate.feddyn`). Each rides in the
global model under a name of its own, ``<prefix><tensor>``, for every floating-point tensor
(integer tensors have no gradient). Stored that way it is in the model trail, survives a
controller restart, and reaches every combiner and client with the model, with no channel
of its own. Whatever scores or trains "the model" takes `model_part`.

Everything here is a pure function of named arrays; inputs are never modified.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

SCAFFOLD_PREFIX = "scaffold.c/"
"""SCAFFOLD's server control variate c."""
FEDDYN_PREFIX = "feddyn.h/"
"""FedDyn's server state h (the mean of the clients' gradient corrections)."""
STATE_PREFIXES = (SCAFFOLD_PREFIX, FEDDYN_PREFIX)

Arrays = Mapping[str, np.ndarray]


def is_state(name: str) -> bool:
    """True if tensor ``name`` is server state of some drift correction, not the model."""
    return name.startswith(STATE_PREFIXES)


def state_prefixes(names: Iterable[str]) -> set[str]:
    """The prefixes of the server state among tensor ``names`` (a model header will do)."""
    return {prefix for name in names for prefix in STATE_PREFIXES if name.startswith(prefix)}


def model_part(params: Arrays) -> Params:
    """``params`` without any server state: the model to score or to train. A model with
    none is returned as is (a new dict of the same arrays; nothing is copied)."""
    return {name: value for name, value in params.items() if not is_state(name)}


def with_zero_state(params: Arrays, prefix: str) -> Params:
    """``model_part(params)`` and a zero tensor under ``prefix`` per floating-point tensor:
    where a session with that drift correction starts."""
    model = model_part(params)
    zeros = {
        prefix + name: np.zeros_like(value) for name, value in model.items() if is_float(value)
    }
    return {**model, **zeros}


def split_state(params: Arrays, prefix: str, *, setting: str) -> tuple[Params, Params]:
    """``(model, state)`` of a global model, ``state`` keyed by the model tensor's name.

    Raises `ConfigError` unless every floating-point tensor, and only those, has a state
    tensor under ``prefix`` of its own shape and dtype; ``setting`` is the session setting
    that makes the controller add them (named in the error).
    """
    model = model_part(params)
    state = {
        name.removeprefix(prefix): value
        for name, value in params.items()
        if name.startswith(prefix)
    }
    floats = {name: value for name, value in model.items() if is_float(value)}
    if set(state) != set(floats):
        raise ConfigError(
            f"the global model's {prefix}* tensors cover {sorted(state)} but its "
            f"floating-point tensors are {sorted(floats)}; start the session with "
            f"{setting} so the controller adds them"
        )
    check_same_layout(specs_of(floats), specs_of(state))
    return model, state


def check_participation(fraction: float, method: str) -> None:
    """Raise `ConfigError` unless ``fraction`` (the round's |S|/N) is in (0, 1]."""
    if not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ConfigError(
            f"{method}'s participation fraction must be in (0, 1], got {fraction!r}; it is "
            "the share of the clients asked this round (1 with full participation)"
        )


def is_float(value: np.ndarray) -> bool:
    return bool(np.issubdtype(np.asarray(value).dtype, np.floating))


def as_f64(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float64)


def cast_like(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    return value.astype(np.asarray(like).dtype)
