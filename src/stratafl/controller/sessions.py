"""The session loop: R rounds from a seed model, each round recorded once.

One session runs at a time: `SessionRunner.start` (and `resume`) refuse while one runs,
whoever asks (the REST API, a test, recovery), so the rule holds below every endpoint.

A session runs one round after another from the newest model of its trail. Each round
returns a report (`controller.rounds`); this loop is the one place that records it: the
round's row, its events, and the session's progress, the row and the progress in one
transaction so that a controller killed at any point can resume the session from its
last recorded round (`resume`, called at start by `controller.recovery`). A failed round
is recorded and run again with the same number (a round waits for its clients first);
the session fails with the round's reason only after more than ``max_failed_rounds``
failures. After each round the trail applies its retention policy. An operator may stop a
session (it ends after the round in flight) or cancel it (it ends now; the round in flight
is dropped and leaves nothing behind). A session with SCAFFOLD starts from a copy of its
seed with zero control variates (round 0 of its trail), unless the seed has them.
Each round after a finished one caps update weights from the example counts that round
verified (`controller.caps`); a resumed session takes them from its last finished round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from pathlib import Path

from stratafl.aggregate import Aggregator, ServerOptState, parse_aggregator
from stratafl.controller.caps import next_weight_cap
from stratafl.controller.rounds import Event, Federation, GlobalRoundRunner, RoundReport
from stratafl.controller.trail import ModelTrail
from stratafl.errors import ConfigError, RoundFailed, StrataError
from stratafl.observe.watchers import RoundLog, SessionWatcher
from stratafl.records import RoundProgress, SessionRecord
from stratafl.settings import BestModel, SessionConfig
from stratafl.status import RoundStatus, SessionStatus
from stratafl.store.state import StateStore

log = logging.getLogger("stratafl.controller")


class SessionRunner:
    """Runs one session at a time, and refuses a second while one runs; constructing it
    starts nothing. ``watch`` is told of each recorded round and each session end."""

    def __init__(
        self,
        store: StateStore,
        trail: ModelTrail,
        federation: Federation,
        staging: Path,
        *,
        watch: SessionWatcher | None = None,
    ) -> None:
        self._store = store
        self._trail = trail
        self._rounds = GlobalRoundRunner(federation, trail, staging, announce=self._announce)
        self._watch = RoundLog() if watch is None else watch
        self.current: asyncio.Task[None] | None = None
        self._current_id: str | None = None
        self._current_app = ""
        self._stop_by: str | None = None
        self._cancel_by: str | None = None
        self._starting = False

    def running_app(self) -> str:
        """The SHA-256 of the running session's app package ("" for none, or no session):
        the one package the controller serves to clients."""
        return self._current_app if self.busy() else ""

    def busy(self) -> bool:
        """A session runs, or one is being started."""
        return self._starting or (self.current is not None and not self.current.done())

    async def start(self, config: SessionConfig) -> str:
        """Start a session in the background; returns its id. Raises `StrataError` while
        another session runs (the REST API answers 400), before anything is recorded.

        Its checks and records run on the store's writer thread and the optimiser state is
        read in a worker thread, so the caller's event loop (a REST handler's, which also
        runs the rounds) never waits on SQL or on the model store; the session counts as
        running from the first check on, so a second start in the meantime is refused."""
        self._require_idle()
        self._starting = True
        try:
            session_id, seed_model = await self._store.off_loop.write(self._record_start, config)
            aggregator = parse_aggregator(config.aggregator)
            state = await asyncio.to_thread(self._trail.optimizer_state, seed_model, aggregator)
        finally:
            self._starting = False
        self._launch(session_id, config, aggregator, seed_model, state, first=1, failures=0)
        return session_id

    def _record_start(self, config: SessionConfig) -> tuple[str, str]:
        """Check the seed and record the new session and its start event; its id and seed."""
        seed = self._store.model(config.seed_model_id or self._newest_model())  # NotFoundError
        seed_model = seed.id  # the whole id, when the config named a prefix of it
        if config.seed_model_id is not None:
            config = config.model_copy(update={"seed_model_id": seed_model})
        if seed.pruned_at is not None:
            raise ConfigError(
                f"model {seed_model} was pruned: {self._trail.retention.describe()}; "
                "pick a model that was kept (GET /api/v1/models)"
            )
        if seed.size_bytes > config.max_model_bytes:
            raise ConfigError(
                f"model {seed_model} is {seed.size_bytes} bytes, over this session's "
                f"max_model_bytes of {config.max_model_bytes}; raise it or pick another seed"
            )
        session_id = uuid.uuid4().hex[:12]
        self._store.create_session(session_id, config.model_dump(), seed_model)
        self._store.add_event(
            "session_started",
            "controller",
            f"session {session_id}",
            session_id=session_id,
            config=config.model_dump(),
        )
        return session_id, seed_model

    def resume(self, session: SessionRecord) -> None:
        """Continue a session a stopped controller left running, from its last recorded
        round: its final model, the optimiser state saved beside it, its stored config.

        The round in flight when the controller stopped left no row (a round is recorded
        with the session's progress, at once), so it runs again with the same number and
        seed. Raises for a config this version cannot read (the caller fails the session),
        and `StrataError` while another session runs.
        """
        self._require_idle()
        config = SessionConfig.model_validate(session.config)
        if session.final_model_id is None:
            raise StrataError(f"session {session.id} has no model to resume from")
        first = session.rounds_done + 1
        failures = sum(r.status != RoundStatus.FINISHED for r in self._store.rounds(session.id))
        self._store.add_event(
            "session_resumed",
            "controller",
            f"session {session.id} resumes at round {first} from model {session.final_model_id}",
            session_id=session.id,
            round=first,
        )
        aggregator = parse_aggregator(config.aggregator)
        state = self._trail.optimizer_state(session.final_model_id, aggregator)
        self._launch(
            session.id,
            config,
            aggregator,
            session.final_model_id,
            state,
            first=first,
            failures=failures,
        )

    def _launch(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        model_id: str,
        state: ServerOptState,
        *,
        first: int,
        failures: int,
    ) -> None:
        """Run the session in the background from round ``first`` on ``model_id``."""
        self._current_id, self._stop_by, self._cancel_by = session_id, None, None
        self._current_app = config.app_sha256
        self.current = asyncio.ensure_future(
            self._run(session_id, config, aggregator, model_id, state, first, failures)
        )

    async def stop(self, session_id: str, by: str) -> str:
        """End ``session_id`` (an id or a unique prefix) after the round in flight; ``by``
        is recorded as who asked. Returns the session's whole id."""
        session_id = await self._require_running(session_id)
        self._stop_by = by
        return session_id

    async def cancel(self, session_id: str, by: str) -> str:
        """End ``session_id`` (an id or a unique prefix) now; the round in flight is
        dropped. Returns the session's whole id."""
        session_id = await self._require_running(session_id)
        self._cancel_by = by
        assert self.current is not None
        self.current.cancel()
        return session_id

    def _require_idle(self) -> None:
        if not self.busy():
            return
        if self._current_id is None or self._starting:
            raise StrataError("a session is being started; wait for it, then try again")
        raise StrataError(
            f"session {self._current_id} is already running (one session runs at a time); "
            f"wait for it to end, or stop it: strata session stop {self._current_id} "
            "(add --cancel to drop the round in flight)"
        )

    async def _require_running(self, session_id: str) -> str:
        """The whole id of ``session_id``, if that session is the one running."""
        session = await self._store.off_loop.read(self._store.session, session_id)  # 404
        if not self.busy() or self._current_id != session.id:
            raise RoundFailed(f"session {session.id} is not running; nothing to stop")
        return session.id

    def _newest_model(self) -> str:
        """The default seed: the newest model, unless it is an upload whose layout differs
        from the trail's newest trained model (then it must be named explicitly)."""
        newest = self._store.newest_model()
        if newest is None:
            raise StrataError(
                "no model in the store: upload a seed model first (POST /api/v1/models)"
            )
        if newest.session_id is None:
            trained = next(
                (m for m in reversed(self._store.models()) if m.session_id and not m.pruned_at),
                None,
            )
            if trained is not None and self._trail.layout(trained.id) != self._trail.layout(
                newest.id
            ):
                raise ConfigError(
                    f"the newest model {newest.id} is an upload whose tensors differ from the "
                    f"trail's newest trained model {trained.id}; to start from it anyway, "
                    "name it as seed_model_id"
                )
        return newest.id

    async def _run(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        model_id: str,
        state: ServerOptState,
        number: int,
        failures: int,
    ) -> None:
        """Rounds ``number`` to ``config.rounds``; ``failures`` failed rounds so far."""
        try:
            model_id = await self._start_model(session_id, config, aggregator, model_id, state)
            done = [r for r in self._store.rounds(session_id) if r.status == RoundStatus.FINISHED]
            weight_cap = next_weight_cap(done[-1].outcomes, config.weight_cap_ratio) if done else 0
            while number <= config.rounds:
                report = await self._rounds.run(
                    session_id, config, aggregator, number, model_id, state, weight_cap=weight_cap
                )
                record = report.record
                if record.status != RoundStatus.FINISHED:
                    self._record(report, final_model_id=None, config=config)
                    failures += 1
                    if failures > config.max_failed_rounds:
                        raise RoundFailed(
                            f"round {number} failed: {record.reason} ({failures} failed "
                            f"rounds; max_failed_rounds is {config.max_failed_rounds})"
                        )
                    continue  # the same round again, once it has its clients
                assert record.model_out is not None
                self._record(report, final_model_id=record.model_out, config=config)
                model_id, state = record.model_out, report.state
                weight_cap = next_weight_cap(record.outcomes, config.weight_cap_ratio)
                await asyncio.to_thread(self._prune)
                if self._stop_by is not None and number < config.rounds:
                    self._end(
                        session_id,
                        SessionStatus.STOPPED,
                        f"stopped by {self._stop_by} after round {number}",
                    )
                    return
                number += 1
            self._end(session_id, SessionStatus.FINISHED, "")
        except asyncio.CancelledError:
            self._end(session_id, SessionStatus.CANCELLED, f"cancelled by {self._cancel_by}")
        except Exception as exc:  # the session records why it stopped; nothing is lost
            log.exception("session %s failed", session_id)
            self._end(session_id, SessionStatus.FAILED, str(exc))
        finally:  # an ended session's last models are no longer the running session's
            self._prune()

    async def _start_model(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        model_id: str,
        state: ServerOptState,
    ) -> str:
        """``model_id``, or the copy of it the session's drift correction needs
        (`ModelTrail.start_copy`), which becomes the session's newest model."""
        prefix = config.drift_state_prefix()
        model = await self._trail.start_copy(
            model_id, state_prefix=prefix, session_id=session_id, aggregator=aggregator, state=state
        )
        if model is None:
            return model_id
        self._store.update_session(session_id, final_model_id=model.id)
        how = f"with zero {prefix}* state" if prefix else "without its drift-correction state"
        self._store.add_event(
            "start_model_made",
            "controller",
            f"session {session_id} starts from {model.id}: model {model_id} {how}",
            session_id=session_id,
            model=model.id,
            parent=model_id,
        )
        return model.id

    def _end(self, session_id: str, status: SessionStatus, reason: str) -> None:
        """Record the session's end, tell the watchers, and add its end event (whose
        message is the reason, or ``session <id>`` for a session that simply finished)."""
        self._store.update_session(
            session_id, status=status, reason=reason, finished_at=time.time()
        )
        self._watch.session_ended(session_id, status, reason)
        self._store.add_event(
            f"session_{status}",
            "controller",
            reason or f"session {session_id}",
            session_id=session_id,
            reason=reason,
        )

    def _prune(self) -> None:
        """Apply the retention policy; a model store that fails to delete is an event, not
        the end of the session (the round it follows is recorded already)."""
        try:
            pruned = self._trail.prune()
        except OSError as exc:
            self._store.add_event("retention_failed", "controller", str(exc))
            return
        if pruned:
            self._store.add_event(
                "models_pruned", "controller", f"{len(pruned)} models pruned", models=pruned
            )

    def _record(
        self, report: RoundReport, *, final_model_id: str | None, config: SessionConfig
    ) -> None:
        """The round's events, then its row, the session's progress and, if its model
        scored best so far by ``best_model_by``, the session's best model, in one
        transaction."""
        record = report.record
        for event in report.events:
            self._announce(record.session_id, event)
        metric, lowest = config.best_metric()
        score = record.validation.mean(metric)
        best = None if score is None or not math.isfinite(score) else BestModel(score, lowest)
        self._store.finish_round(record, final_model_id=final_model_id, best=best)
        self._watch.round_recorded(record)
        self._store.add_event(
            f"round_{record.status}",
            "controller",
            f"session {record.session_id} round {record.number}",
            session_id=record.session_id,
            **RoundProgress.of(record).model_dump(mode="json"),
        )

    def _announce(self, session_id: str, event: Event) -> None:
        """Record an event of the session's rounds (a live stream shows it at once)."""
        self._store.add_event(
            event.kind, event.source, event.message, session_id=session_id, **event.data
        )
