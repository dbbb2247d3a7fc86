"""Which models the controller asked each combiner to run a round on: the only models that
combiner may download from the controller.

A combiner fetches a round's model when the round starts (its cache, `combiner.model_cache`);
any other model in the store (another session's, an admin's seed) is none of its business.
"""

from __future__ import annotations

from collections import deque

KEEP_PER_COMBINER = 8
"""Models remembered per combiner: its rounds in flight (training, then validation of the
new model) and a few before, for a combiner that fetches late."""


class SentModels:
    """Per combiner id, the models of the newest rounds sent to it (in memory: a combiner
    fetches a round's model while the round runs, from the process that sent it)."""

    def __init__(self, keep: int = KEEP_PER_COMBINER) -> None:
        self._keep = keep
        self._sent: dict[str, deque[str]] = {}

    def record(self, combiner_id: str, model_id: str) -> None:
        """``combiner_id`` is about to be asked to run a round of ``model_id``."""
        sent = self._sent.setdefault(combiner_id, deque(maxlen=self._keep))
        if model_id in sent:
            sent.remove(model_id)
        sent.append(model_id)

    def was_sent(self, combiner_id: str, model_id: str) -> bool:
        return model_id in self._sent.get(combiner_id, ())
