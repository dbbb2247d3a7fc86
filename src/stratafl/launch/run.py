"""`strata run` and `strata demo` as a use case: start a federation, run a session, report.

`run_federation` does the work and returns a typed `RunReport`; what to show while it runs
is up to the caller, through a `RunProgress` (the CLI draws a progress bar with it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stratafl.errors import StrataError
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.launch.report import PromiseCheck, RoundSummary, promise_check, round_summary
from stratafl.modelfile.codec import copy_params_from_file
from stratafl.records import PromiseRecord, RoundRecord
from stratafl.restapi.schema import Session
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, SessionStatus

MODEL_FILE = "final_model.safetensors"
"""Where, in the run's work folder, the final model is saved before the federation stops."""


class RunProgress(Protocol):
    """What a run reports while it goes, in this order."""

    def federation_up(self, seconds: float) -> None:
        """Every tier serves and every client is connected, ``seconds`` after the start."""

    def rounds_done(self, rounds: list[RoundSummary], total: int) -> None:
        """A round was recorded; ``rounds`` are all the session's rounds so far."""

    def session_done(self, rounds: list[RoundSummary]) -> None:
        """The session finished and its final model is in hand (the federation still runs)."""

    def baselines_started(self) -> None:
        """The promise check's baselines start training (only with ``baselines=True``)."""

    def baselines_step(self, step: str) -> None:
        """One more baseline trained, e.g. ``"3 of 11 baselines trained"``."""


class QuietProgress:
    """A `RunProgress` that shows nothing."""

    def federation_up(self, seconds: float) -> None:
        pass

    def rounds_done(self, rounds: list[RoundSummary], total: int) -> None:
        pass

    def session_done(self, rounds: list[RoundSummary]) -> None:
        pass

    def baselines_started(self) -> None:
        pass

    def baselines_step(self, step: str) -> None:
        pass


@dataclass(frozen=True)
class RunReport:
    """What `strata run --report` writes: the run's settings, every round, the promise check."""

    app: str
    clients: int
    combiners: int
    partition: str
    seed: int
    session: SessionConfig
    session_id: str
    rounds: list[RoundSummary]
    model_trail: list[str]  # the seed model first, the final model last
    final_model: str
    federation_seconds: float  # start of the federation to the final model in hand
    promise: PromiseCheck | None  # None without baselines
    total_seconds: float
    model_file: Path | None = None  # the final model, kept in the work folder

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "app": self.app,
            "clients": self.clients,
            "combiners": self.combiners,
            "partition": self.partition,
            "seed": self.seed,
            "session": self.session.model_dump(),
            "session_id": self.session_id,
            "rounds": [r.to_dict() for r in self.rounds],
            "model_trail": self.model_trail,
            "final_model": self.final_model,
            "federation_seconds": self.federation_seconds,
        }
        if self.model_file is not None:
            report["model_file"] = str(self.model_file)
        if self.promise is not None:
            report["promise"] = self.promise.to_dict()
        report["total_seconds"] = self.total_seconds
        return report

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def run_federation(
    spec: FederationSpec,
    session: SessionConfig,
    *,
    baselines: bool = True,
    progress: RunProgress | None = None,
) -> RunReport:
    """Start ``spec``'s federation, run ``session`` on it, stop everything, report.

    With ``baselines``, also train the promise check's baselines with the same epoch
    budget. With a ``spec.workdir``, the final model is saved there (`MODEL_FILE`) before
    the federation stops. Raises StrataError if the session does not finish, naming the
    log of the tier to read.
    """
    show = progress or QuietProgress()
    started = time.monotonic()
    with LocalFederation(spec) as federation:
        federation.upload_seed_model()
        federation.wait_for_clients(spec.clients)
        show.federation_up(time.monotonic() - started)

        def on_rounds(_: Session, rounds: list[RoundRecord]) -> None:
            show.rounds_done([round_summary(r) for r in rounds], session.rounds)

        result, records = federation.run_session(session, progress=on_rounds)
        if result.status != SessionStatus.FINISHED or result.final_model_id is None:
            raise StrataError(
                f"session {result.id} {result.status}: {result.reason}"
                f"{where_to_look(federation, records)}"
            )
        final_id = result.final_model_id
        trail = [m.id for m in federation.client.trail(final_id)][::-1]
        if spec.workdir is not None:
            model_file = federation.client.download_model(final_id, spec.workdir / MODEL_FILE)
            final = copy_params_from_file(model_file)
        else:
            model_file, final = None, federation.client.download_params(final_id)
        federation_seconds = time.monotonic() - started
        rounds = [round_summary(r) for r in records]
        show.session_done(rounds)
        promise = None
        if baselines:  # while the controller is up, so the session keeps its promise check
            show.baselines_started()
            promise = promise_check(
                spec.app,
                final,
                clients=spec.clients,
                partition=spec.partition,
                seed=spec.seed,
                train_config=session.task_config(0),
                epochs_budget=session.rounds * session.local_epochs,
                on_step=show.baselines_step,
            )
            federation.client.record_promise(result.id, PromiseRecord.model_validate(promise))
    return RunReport(
        app=spec.app,
        clients=spec.clients,
        combiners=spec.combiners,
        partition=spec.partition,
        seed=spec.seed,
        session=session,
        session_id=result.id,
        rounds=rounds,
        model_trail=trail,
        final_model=final_id,
        federation_seconds=federation_seconds,
        promise=promise,
        total_seconds=time.monotonic() - started,
        model_file=model_file,
    )


def where_to_look(federation: LocalFederation, rounds: list[RoundRecord]) -> str:
    """``"; see LOG"`` for a failed session: a tier that exited, else the first client of
    the last round that failed (with its reason's first line), else the controller."""
    for tier in federation.group.tiers:
        code = tier.process.poll()
        if code is not None:
            return f"; {tier.name} exited with code {code}, see {tier.log_path}"
    bad = [o for r in rounds[-1:] for o in r.outcomes if o.status != OutcomeStatus.OK]
    for outcome in bad:
        log = federation.log_path(outcome.client_id)
        if log.exists():
            said = outcome.reason.strip().splitlines()[:1] or [str(outcome.status)]
            return f"; {outcome.client_id} {outcome.status} ({said[0]}), see {log}"
    return f"; see {federation.log_path('controller')}"
