"""A session's progress and its trail, kept consistent whenever the controller stops.

A round's row and the session's progress (``rounds_done``, ``final_model_id``) are written
in one transaction, so a crash leaves both or neither: a restarted controller resumes from
a model whose round is recorded. What a crash can still leave is a model listed by a round
that was never recorded (`StateStore.delete_model` removes it) and files the retention
policy deleted (`StateStore.mark_pruned` keeps their rows, marked).

These methods are part of `StateStore` (it inherits them from `ProgressTable`); they live
here to keep `stratafl.store.state` small.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from stratafl.errors import NotFoundError, StrataError
from stratafl.records import RoundRecord, SessionRecord
from stratafl.settings import BestModel
from stratafl.status import RoundStatus, SessionStatus
from stratafl.store.tables import ModelRow, RoundRow, SessionRow

__all__ = ["ProgressTable"]


class ProgressTable:
    """Round results, session progress and model pruning, mixed into `StateStore`."""

    def _session(self) -> Session:  # StateStore's own opens a session on its engine
        raise NotImplementedError

    def finish_round(
        self,
        record: RoundRecord,
        *,
        final_model_id: str | None,
        best: BestModel | None = None,
    ) -> None:
        """Record a round and, with ``final_model_id`` (a finished round's new model), move
        its session on to that model and round in the same transaction; with ``best``
        (that model's score by the session's ``best_model_by``), name it the session's best
        model if it beats the best so far, in the same transaction, so that a resumed
        session compares with what was recorded."""
        if final_model_id is not None and (
            record.status != RoundStatus.FINISHED or record.model_out != final_model_id
        ):
            raise StrataError(
                f"round {record.number} of session {record.session_id} is {record.status} with "
                f"model {record.model_out}; only a finished round's own model may be the "
                f"session's final model, not {final_model_id}"
            )
        with self._session() as db, db.begin():
            session = db.get(SessionRow, record.session_id)
            if session is None:
                raise NotFoundError(
                    f"session {record.session_id!r} does not exist; a round is recorded "
                    "only for a session created with create_session"
                )
            db.add(RoundRow(**record.model_dump(mode="json")))
            if final_model_id is not None:
                session.rounds_done, session.final_model_id = record.number, final_model_id
                if best is not None and best.beats(session.best_score):
                    session.best_model_id, session.best_score = final_model_id, best.score

    def running_sessions(self) -> list[SessionRecord]:
        """Sessions marked running, newest first (after a crash: the ones to resume)."""
        query = (
            select(SessionRow)
            .where(SessionRow.status == SessionStatus.RUNNING.value)
            .order_by(SessionRow.created_at.desc(), SessionRow.id.desc())
        )
        with self._session() as db:
            return [SessionRecord.model_validate(row) for row in db.scalars(query)]

    def mark_pruned(self, model_ids: Sequence[str], when: float | None = None) -> None:
        """Mark models whose files the retention policy deletes; their rows stay."""
        if not model_ids:
            return
        with self._session() as db, db.begin():
            db.execute(
                update(ModelRow)
                .where(ModelRow.id.in_(model_ids), ModelRow.pruned_at.is_(None))
                .values(pruned_at=time.time() if when is None else when)
            )

    def delete_model(self, model_id: str) -> None:
        """Unlist a model that no session's progress or other model refers to (the orphan
        of a round a crash interrupted); a referenced model is refused, not unlisted."""
        by_session = or_(
            SessionRow.seed_model_id == model_id, SessionRow.final_model_id == model_id
        )
        with self._session() as db, db.begin():
            referenced = (
                db.scalars(select(SessionRow.id).where(by_session).limit(1)).first()
                or db.scalars(select(ModelRow.id).where(ModelRow.parent_id == model_id)).first()
            )
            if referenced is not None:
                raise StrataError(
                    f"model {model_id} is referred to by {referenced}; it stays in the trail"
                )
            db.execute(delete(ModelRow).where(ModelRow.id == model_id))
