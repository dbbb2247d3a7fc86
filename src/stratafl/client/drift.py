"""Which drift correction a task asks for, and the app that runs it.

A task's config names its session's drift correction (``drift_correction``: none,
scaffold or feddyn); the client runtime trains with `drift_corrected_app` of its own app,
which is the app itself without drift correction.
"""

from __future__ import annotations

from stratafl.client.app import ClientApp, Config
from stratafl.client.feddyn import FedDynApp
from stratafl.client.scaffold import (
    DRIFT_CORRECTION_KEY,
    ClientControl,
    DriftCorrectableApp,
    ScaffoldApp,
)
from stratafl.errors import ConfigError

KNOWN = ("none", "scaffold", "feddyn")


def drift_correction_of(config: Config) -> str:
    """The drift correction a task's config asks for; an unknown one is a `ConfigError`."""
    value = config.get(DRIFT_CORRECTION_KEY, "none")
    if value not in KNOWN:
        raise ConfigError(
            f"task config {DRIFT_CORRECTION_KEY}={value!r} is unknown to this client; it "
            f"knows {', '.join(map(repr, KNOWN))} (upgrade the client)"
        )
    return str(value)


def drift_corrected_app(
    app: ClientApp, control: ClientControl, config: Config, session_id: str = ""
) -> ClientApp:
    """``app`` as the task's drift correction trains it, its per-session state kept in
    ``control``; a `ConfigError` naming what ``app`` lacks if it cannot run it."""
    method = drift_correction_of(config)
    if method == "none":
        return app
    if not isinstance(app, DriftCorrectableApp):
        raise ConfigError(
            f"drift_correction={method!r} needs an app with train_corrected(params, config, "
            f"correction) -> CorrectedTraining, which {type(app).__name__} lacks; add it "
            "(see stratafl.apps.fashion_mnist) or run the session with drift_correction='none'"
        )
    if method == "scaffold":
        return ScaffoldApp(app, control, session_id)
    return FedDynApp(app, control, session_id)
