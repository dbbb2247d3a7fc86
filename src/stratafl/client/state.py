"""What one client keeps across tasks and reconnects: light, so a swarm holds thousands.

Its identity (id, token), its app (one instance may serve many clients), its reconnect
backoff and the id of the last model it downloaded: a few hundred bytes. What drift
correction and top-k owe across rounds is created on first use only: in memory, and in
the work folder when the client has one (the client runtime does; swarm clients keep it
in memory, so a swarm process restarted starts them from zero, as a new device would).
"""

from __future__ import annotations

import random
from pathlib import Path

from stratafl.client.app import ClientApp
from stratafl.client.drift import drift_corrected_app
from stratafl.client.feedback import load_feedback, save_feedback
from stratafl.client.packages import AppPackages, AppRefused
from stratafl.client.scaffold import ClientControl
from stratafl.client.task_settings import TaskSettings
from stratafl.compression import ErrorFeedback
from stratafl.transport.backoff import Backoff

__all__ = ["BACKOFF_BASE_SECONDS", "MAX_BACKOFF_SECONDS", "ClientState"]

BACKOFF_BASE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
"""Reconnect waits: uniform in [0, min(5 s, 0.2 s * 2**failures)] (full jitter)."""


class ClientState:
    """One client of the protocol (`stratafl.client.protocol`); constructing it reads
    nothing (the work folder's files are read on first use)."""

    __slots__ = (
        "_control",
        "_feedback",
        "accepted_combiners",
        "app",
        "backoff",
        "client_id",
        "last_model",
        "packages",
        "preferred_combiner",
        "receipt_key",
        "ticket",
        "token",
        "token_file",
        "workdir",
    )

    def __init__(
        self,
        client_id: str,
        app: ClientApp,
        *,
        token: str | None = None,
        rng: random.Random | None = None,
        preferred_combiner: str | None = None,
        workdir: Path | None = None,
        token_file: Path | None = None,
        packages: AppPackages | None = None,
        accepted_combiners: tuple[str, ...] = (),
    ) -> None:
        self.client_id = client_id
        self.app = app
        self.packages = packages
        """The app packages this client may run when a task names one; None: none."""
        self.token = token
        """Sent to the controller; None on an insecure federation. Renewed by the protocol
        halfway through its life (and written back to ``token_file``, if it came from one)."""
        self.token_file = token_file
        self.ticket: str | None = None
        """The current combiner's ticket (from ``/assign``): what every gRPC call carries."""
        self.accepted_combiners = accepted_combiners
        """The only combiners this client connects to (empty: any): a combiner sees its
        clients' updates, so a site may keep them within its own organisation. An
        assignment elsewhere is refused and the client asks again for one of these."""
        self.preferred_combiner = preferred_combiner or next(iter(accepted_combiners), None)
        """The combiner this client asks for at every assignment (a placement); the
        controller honours it while that combiner is online and has room."""
        self.workdir = workdir
        """Keeps what must survive a restart: top-k's residuals, SCAFFOLD's c_i, FedDyn's
        g_i; None keeps them in memory only."""
        self.backoff = Backoff(
            BACKOFF_BASE_SECONDS, MAX_BACKOFF_SECONDS, rng=rng or random.Random()
        )
        """The waits between reconnect attempts; reset whenever a task stream opens."""
        self.last_model: str | None = None
        self.receipt_key: bytes | None = None
        """The key the controller handed out with the last assignment: the client signs
        its receipts with it (`stratafl.security.receipts`); None until assigned."""
        self._feedback: ErrorFeedback | None = None
        self._control: ClientControl | None = None

    def accepts(self, combiner_id: str) -> bool:
        """True if this client may connect to ``combiner_id``."""
        return not self.accepted_combiners or combiner_id in self.accepted_combiners

    def prefer_next_accepted(self) -> None:
        """Ask for the next accepted combiner (in order, round and round): the one asked
        for last had no room or was away."""
        accepted = self.accepted_combiners
        if not accepted:
            return
        if self.preferred_combiner in accepted:
            at = accepted.index(self.preferred_combiner)
            self.preferred_combiner = accepted[(at + 1) % len(accepted)]
        else:
            self.preferred_combiner = accepted[0]

    @property
    def control(self) -> ClientControl:
        """The drift-correction state: SCAFFOLD's c_i or FedDyn's g_i."""
        if self._control is None:
            self._control = ClientControl(self.workdir)
        return self._control

    def app_of(self, settings: TaskSettings) -> ClientApp:
        """The app the task names: the session's package (`stratafl.client.packages`;
        blocking: installs it on first use), else this client's own. A package this
        client may not run is an `AppRefused` naming the fix."""
        if not settings.app:
            return self.app
        if self.packages is None:
            raise AppRefused(
                f"app package {settings.app.sha256} is not allowed at this site: this client "
                "runs no app packages"
            )
        return self.packages.app(settings.app, self.token)

    def app_for(self, settings: TaskSettings, session_id: str) -> ClientApp:
        """The app as the task trains it: the task's app, or that app wrapped in the
        session's drift correction, whose state this client keeps."""
        app = self.app_of(settings)
        if settings.drift_correction == "none":
            return app
        return drift_corrected_app(app, self.control, settings.config, session_id)

    def feedback_for(self, session_id: str) -> ErrorFeedback:
        """Top-k's residuals in ``session_id``: what earlier updates did not send."""
        if self._feedback is None:
            self._feedback = load_feedback(self.workdir)
        return self._feedback.for_session(session_id)

    def keep_feedback(self) -> None:
        """Write top-k's residuals to the work folder (whole or not at all), if any."""
        if self._feedback is not None:
            save_feedback(self.workdir, self._feedback)
