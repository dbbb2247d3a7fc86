"""What a controller does at start with what the previous one left: it resumes the session.

A controller may be killed at any point of a round (kill -9, power loss). What that can
leave, and what is done with it here, before the controller serves anyone:

- files half-written to the staging folder or the model store: deleted;
- complete files in the model store that no listed, unpruned model owns (stored just
  before the kill, or pruned just before it): deleted;
- a model listed by the round in flight whose row (and the session's progress) was not
  yet recorded: that round is run again, so the model is an orphan with no progress
  pointing at it; it is unlisted and its files deleted, and the trail has one model per
  recorded round;
- a session left running: resumed from its last recorded round (`SessionRunner.resume`).
  Only one session runs at a time, so if several were left running (which one controller
  never does) the newest is resumed and the others fail with the reason.
"""

from __future__ import annotations

import logging
import time

from stratafl.controller.sessions import SessionRunner
from stratafl.controller.trail import ModelTrail
from stratafl.errors import StrataError
from stratafl.records import SessionRecord
from stratafl.status import SessionStatus
from stratafl.store.state import StateStore

__all__ = ["recover"]

log = logging.getLogger("stratafl.controller")


def recover(store: StateStore, trail: ModelTrail, sessions: SessionRunner) -> str | None:
    """Clear what was half-made and resume the newest session left running; returns its id.

    Call once at start, inside the event loop and before anything writes models.
    """
    trail.clear_staging()
    for file_id in trail.sweep_unowned():
        store.add_event("model_file_swept", "controller", f"{file_id}: no listed model owns it")
    running = store.running_sessions()
    for session in running:
        for orphan in _orphans(store, session):
            try:
                trail.discard(orphan)
            except StrataError as exc:  # something refers to it after all: it stays
                store.add_event("model_kept", "controller", str(exc))
                continue
            store.add_event(
                "model_dropped",
                "controller",
                f"model {orphan} of session {session.id} was made by a round that was not "
                "recorded before the controller stopped; that round runs again",
            )
    if not running:
        return None
    newest, *others = running
    for session in others:
        _fail(
            store,
            session,
            f"the controller stopped during the session and several sessions were left "
            f"running; only the newest, {newest.id}, was resumed: start a new session from "
            f"this one's final model {session.final_model_id}",
        )
    try:
        sessions.resume(newest)
    except (StrataError, ValueError) as exc:  # e.g. a config this version cannot read
        _fail(store, newest, f"the session could not be resumed after a restart: {exc}")
        return None
    log.warning("session %s was interrupted by a controller restart; resuming it", newest.id)
    return newest.id


def _orphans(store: StateStore, session: SessionRecord) -> list[str]:
    """Models of ``session`` from rounds past its recorded progress, newest first."""
    made = store.models(session.id)
    return [m.id for m in reversed(made) if m.round is not None and m.round > session.rounds_done]


def _fail(store: StateStore, session: SessionRecord, reason: str) -> None:
    store.update_session(
        session.id, status=SessionStatus.FAILED, reason=reason, finished_at=time.time()
    )
    store.add_event(
        "session_failed",
        "controller",
        f"session {session.id}",
        session_id=session.id,
        reason=reason,
    )
