"""SCAFFOLD on the client: any app whose local steps take a correction, wrapped.

An app opts in by offering `DriftCorrectableApp.train_corrected`: train as ``train`` does,
adding a fixed array to each tensor's gradient at every local step, and say how many
steps of which learning rate it took (SCAFFOLD's option II needs K * lr). `ScaffoldApp`
does the rest (`stratafl.aggregate.scaffold` has the maths): it splits the global model
into the model and the server's control variate c, trains with ``c - c_i``, updates the
client's c_i and returns the update the server's FedAvg turns into SCAFFOLD's step.

The client's c_i is state of the client, not of a round: `ClientControl` keeps it in
memory across rounds and, with a work folder, in ``control_variates.safetensors`` there
(written whole or not at all, labelled with its session), so a restarted client goes on
from its c_i. A file that cannot be read is set aside (``.unreadable``) and c_i starts at
zero, as it does in a new session. c_i is kept as soon as training ends: an update lost
after that (a dropped upload, a failed round) leaves c off the mean of the c_i by that
client's step, which later rounds wash out, as the paper's sampled clients do.

The client runtime wraps its app in `ScaffoldApp` when a task's config asks for it
(`stratafl.client.drift`); a loop of your own can do the same. FedDyn
(`stratafl.client.feddyn`) reuses `DriftCorrectableApp` and keeps its g_i in `ClientControl`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from stratafl.aggregate.scaffold import (
    client_update,
    local_correction,
    split_control,
    updated_client_control,
)
from stratafl.aggregate.server_state import model_part
from stratafl.client.app import ClientApp, Config, TrainResult
from stratafl.errors import ConfigError, ModelFormatError
from stratafl.modelfile.codec import copy_params_from_stream, save_params
from stratafl.params import Params, check_same_layout, specs_of

log = logging.getLogger("stratafl.client")

DRIFT_CORRECTION_KEY = "drift_correction"
PARTICIPATION_KEY = "participation"
"""Task config keys: ``"scaffold"`` asks for SCAFFOLD; the round's fraction |S|/N."""
CONTROL_FILE = "control_variates.safetensors"
SESSION_KEY = "session_id"


@dataclass(frozen=True)
class CorrectedTraining:
    """What `DriftCorrectableApp.train_corrected` returns: the usual result, and the
    ``steps`` (K) of learning rate ``lr`` it took (the mean rate, under a schedule)."""

    result: TrainResult
    steps: int
    lr: float


@runtime_checkable
class DriftCorrectableApp(ClientApp, Protocol):
    """A `ClientApp` whose local SGD can add a fixed correction to every gradient."""

    def train_corrected(
        self, params: Params, config: Config, correction: Params
    ) -> CorrectedTraining:
        """``train``, with ``correction[name]`` added to the gradient of tensor ``name`` at
        every local step (``correction`` covers the floating-point tensors)."""
        ...


class ClientControl:
    """One client's control variate c_i, for the session it belongs to; constructing it
    reads nothing (the file is read on first use)."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._path = None if workdir is None else workdir / CONTROL_FILE
        self._session_id = ""
        self._values: Params = {}
        self._loaded = workdir is None

    def for_session(self, session_id: str, like: Mapping[str, np.ndarray]) -> Params:
        """c_i in ``session_id``, laid out as ``like`` (the server's c): zero for a new
        session and for any tensor whose kept value has another shape or dtype."""
        self._load()
        kept = self._values if session_id == self._session_id else {}
        values: Params = {}
        for name, value in like.items():
            old = kept.get(name)
            same = old is not None and old.shape == value.shape and old.dtype == value.dtype
            values[name] = np.array(old) if same else np.zeros_like(value)
        return values

    def keep(self, session_id: str, values: Mapping[str, np.ndarray]) -> None:
        """Make ``values`` the c_i of ``session_id``: on disk first (if there is a work
        folder), then in memory, so a failed write leaves the old c_i in both."""
        copied = {name: np.array(value) for name, value in values.items()}
        if self._path is not None and copied:
            save_params(self._path, copied, {SESSION_KEY: session_id})
        self._session_id, self._values, self._loaded = session_id, copied, True

    def _load(self) -> None:
        if self._loaded or self._path is None:
            return
        self._loaded = True
        if not self._path.exists():
            return
        try:
            with open(self._path, "rb") as stream:
                values, metadata = copy_params_from_stream(stream)
        except (OSError, ModelFormatError) as exc:
            aside = self._path.with_name(self._path.name + ".unreadable")
            self._path.replace(aside)
            log.warning(
                "control variates in %s unreadable (%s); moved to %s, c_i starts at zero",
                self._path,
                exc,
                aside,
            )
            return
        self._session_id, self._values = metadata.get(SESSION_KEY, ""), values


@dataclass(frozen=True)
class ScaffoldApp:
    """``app`` trained with SCAFFOLD's correction in session ``session_id``, its c_i kept
    in ``control``; validation sees the model without the control variates."""

    app: DriftCorrectableApp
    control: ClientControl
    session_id: str = ""

    def initial_params(self, seed: int) -> Params:
        return self.app.initial_params(seed)

    def train(self, params: Params, config: Config) -> TrainResult:
        model, c = split_control(params)
        fraction = participation(config)
        c_i = self.control.for_session(self.session_id, c)
        done = self.app.train_corrected(model, config, local_correction(c, c_i))
        trained = done.result.params
        check_same_layout(specs_of(model), specs_of(trained))
        c_i_new = updated_client_control(c_i, c, model, trained, steps=done.steps, lr=done.lr)
        update = client_update(params, trained, c_i, c_i_new, fraction)
        self.control.keep(self.session_id, c_i_new)
        return dataclasses.replace(done.result, params=update)

    def validate(self, params: Params, config: Config) -> Mapping[str, float]:
        return self.app.validate(model_part(params), config)


def participation(config: Config) -> float:
    """The round's participation fraction |S|/N from a task's config (1 if absent);
    `client_update` checks that it is in (0, 1]."""
    try:
        return float(config.get(PARTICIPATION_KEY, 1.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"task config {PARTICIPATION_KEY}={config.get(PARTICIPATION_KEY)!r} is not a "
            "number in (0, 1]"
        ) from exc
