"""Which models of the trail keep their files: the retention policy.

Every round stores a model (and its optimiser state), so a long session of a large model
would fill the model store. The trail's rows are kept for ever, so the lineage of every
model can still be read with no gap; only the files of models nobody needs are deleted,
and their rows are marked pruned (a pruned model's download answers 410 Gone).

A model keeps its file if it is any of:

- one of the last ``keep_last`` models of a session, running or ended (what an operator
  rolls back to);
- the best model of a session (``SessionRecord.best_model_id``: the finished round's model
  that scored best by the session's ``best_model_by``, accuracy unless it says otherwise),
  which is often not among the last ones;
- the model of every ``keep_every``-th round of any session (a sparse history);
- a model a session started from (its seed) or ended on, or that the running session
  stands on now (every session's ``final_model_id``);
- an upload (a model with no session): only its owner knows why it is there.

Either setting at 0 keeps every model. The choice is a pure function of the state store's
records, so it is tested without files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from stratafl.errors import ConfigError
from stratafl.records import ModelRecord, SessionRecord

__all__ = ["RetentionPolicy"]


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """Keep the last ``keep_last`` models and the best model of every session, and every
    ``keep_every``-th round's model (0 for either keeps every model)."""

    keep_last: int = 10
    keep_every: int = 10

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r}: give a whole number >= 0 (0 keeps all)")

    @property
    def keeps_all(self) -> bool:
        return self.keep_last == 0 or self.keep_every == 0

    def describe(self) -> str:
        """The policy in one line, as the controller's log and a 410 answer name it."""
        if self.keeps_all:
            return "the retention policy keeps every model (--keep-last 0 or --keep-every 0)"
        return (
            f"the retention policy keeps the last {self.keep_last} models and the best model "
            f"of every session, every {self.keep_every}th round's model, every model a "
            "session started or ended on, and every upload (--keep-last, --keep-every)"
        )

    def prunable(
        self, models: Sequence[ModelRecord], sessions: Sequence[SessionRecord]
    ) -> list[str]:
        """Ids of the models (not yet pruned) whose files no rule keeps, oldest first."""
        if self.keeps_all:
            return []
        kept = {s.seed_model_id for s in sessions} | {
            model_id
            for s in sessions
            for model_id in (s.final_model_id, s.best_model_id)
            if model_id
        }
        known = {s.id for s in sessions}
        by_session: dict[str, list[ModelRecord]] = defaultdict(list)
        for model in models:
            if model.session_id in known and model.round is not None:
                by_session[model.session_id].append(model)
        for own in by_session.values():
            own.sort(key=lambda m: (m.round or 0, m.created_at))
            kept.update(m.id for m in own[-self.keep_last :])
        return [
            m.id
            for m in models
            if m.pruned_at is None
            and m.id not in kept
            and m.session_id in known  # an upload, or a model of an unknown session, stays
            and m.round is not None
            and m.round % self.keep_every != 0
        ]
