"""FedDyn on the client: any app whose local steps take a correction, wrapped.

FedDyn's local objective (`stratafl.aggregate.feddyn`) is the app's loss plus a linear term
``-<g_i, θ>`` and FedProx's proximal term with mu = alpha. `FedDynApp` trains the wrapped
app's `train_corrected` with the correction ``-g_i`` and ``proximal_mu = alpha``, updates
g_i, and returns the update whose FedAvg is the server's FedDyn step. g_i lives in the
client's `ClientControl` (memory, and the work folder's control-variate file, labelled
with its session), exactly as SCAFFOLD's c_i does: a restarted client goes on from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from stratafl.aggregate.feddyn import (
    client_update,
    local_correction,
    split_dynamic,
    updated_client_gradient,
)
from stratafl.aggregate.server_state import model_part
from stratafl.client.app import Config, TrainResult
from stratafl.client.scaffold import ClientControl, DriftCorrectableApp, participation
from stratafl.errors import ConfigError
from stratafl.params import Params, check_same_layout, specs_of

ALPHA_KEY = "feddyn_alpha"
"""Task config key: FedDyn's alpha."""


@dataclass(frozen=True)
class FedDynApp:
    """``app`` trained with FedDyn's regulariser in session ``session_id``, its g_i kept in
    ``state``; validation sees the model without h."""

    app: DriftCorrectableApp
    state: ClientControl
    session_id: str = ""

    def initial_params(self, seed: int) -> Params:
        return self.app.initial_params(seed)

    def train(self, params: Params, config: Config) -> TrainResult:
        alpha = feddyn_alpha(config)
        model, h = split_dynamic(params)
        g_i = self.state.for_session(self.session_id, h)
        local = {**config, "proximal_mu": alpha}
        done = self.app.train_corrected(model, local, local_correction(g_i))
        trained = done.result.params
        check_same_layout(specs_of(model), specs_of(trained))
        update = client_update(params, trained, alpha=alpha, fraction=participation(config))
        self.state.keep(self.session_id, updated_client_gradient(g_i, model, trained, alpha=alpha))
        return dataclasses.replace(done.result, params=update)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        return self.app.validate(model_part(params), config)


def feddyn_alpha(config: Config) -> float:
    """FedDyn's alpha from a task's config; a `ConfigError` if it is missing or not > 0."""
    try:
        alpha = float(config[ALPHA_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"task config {ALPHA_KEY}={config.get(ALPHA_KEY)!r} is not a number > 0; the "
            "controller sends it with drift_correction='feddyn' (upgrade the controller)"
        ) from exc
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"task config {ALPHA_KEY}={alpha!r} must be a number > 0")
    return alpha
