"""Top-k's error feedback, kept by the client across rounds and across a restart.

What top-k did not send is owed to the federation: the residuals live in memory and, when
the client has a work folder, in ``residuals.safetensors`` there (with the session they
belong to), so a restarted client still sends what it owes. A file that cannot be read is
set aside, never trusted: the client starts again from zero residuals.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stratafl.compression import ErrorFeedback
from stratafl.errors import ModelFormatError
from stratafl.modelfile.codec import copy_params_from_stream, save_params

log = logging.getLogger("stratafl.client")

RESIDUALS_FILE = "residuals.safetensors"
SESSION_KEY = "session_id"


def load_feedback(workdir: Path | None) -> ErrorFeedback:
    """The residuals saved in ``workdir``, or none."""
    path = None if workdir is None else workdir / RESIDUALS_FILE
    if path is None or not path.exists():
        return ErrorFeedback()
    try:
        with open(path, "rb") as stream:
            residuals, metadata = copy_params_from_stream(stream)
    except (OSError, ModelFormatError) as exc:
        log.warning("top-k residuals in %s unreadable (%s); starting from zero", path, exc)
        return ErrorFeedback()
    return ErrorFeedback(metadata.get(SESSION_KEY, ""), residuals)


def save_feedback(workdir: Path | None, feedback: ErrorFeedback) -> None:
    """Keep the residuals in ``workdir`` (written whole or not at all), if there is one."""
    if workdir is None or not feedback.residuals:
        return
    save_params(workdir / RESIDUALS_FILE, feedback.residuals, {SESSION_KEY: feedback.session_id})
