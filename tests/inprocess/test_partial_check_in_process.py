"""The reducer's check of partials in a round, in one event loop: a combiner that alters
its partial (the real combiner code, its partial changed before it leaves) among three is
refused; with the check off, or with two combiners, its partial counts (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stratafl.aggregate import ServerOptState, parse_aggregator
from stratafl.controller.link import CombinerAnswer, RoundTask, read_answer, round_spec
from stratafl.params import TensorSpec
from stratafl.settings import PARTIAL_CHECK_RATIO, SessionConfig
from stratafl.status import RoundStatus
from tests.support.inprocess import (
    Behaviour,
    InProcessFederation,
    LocalLink,
    aiter_of,
    stored_params,
)

MODEL = {"w": np.zeros((16, 8), np.float32), "b": np.zeros(8, np.float32)}
ALTERATION = np.float32(100.0)


class AlteringLink(LocalLink):
    """A hostile combiner: it runs the round as the real one does, then adds `ALTERATION`
    to its partial."""

    async def run_round(
        self, task: RoundTask, quota: int, staging: Path, expect: Sequence[TensorSpec]
    ) -> CombinerAnswer:
        result = await self._combiner.rounds.run(round_spec(task, quota, self._receipts))
        if result.partial is not None:
            result.partial = {name: v + ALTERATION for name, v in result.partial.items()}
        return await read_answer(aiter_of(result.messages()), self.combiner_id, staging, expect)


def _round(tmp_path: Path, combiners: int, **settings: object):
    """One round over ``combiners`` combiners of one honest client each (client i adds i+1
    with 10(i+1) examples); the last combiner is hostile."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    federation = InProcessFederation(tmp_path)
    hostile = f"combiner-{combiners - 1}"
    for index in range(combiners):
        combiner = federation.add_combiner(f"combiner-{index}")
        federation.add_client(combiner, index, Behaviour.HONEST)
    federation.online = lambda: [  # type: ignore[method-assign]
        (AlteringLink if c.combiner_id == hostile else LocalLink)(c, federation.receipts)
        for c in federation.combiners
    ]
    config = SessionConfig(round_timeout=5.0, wait_for_clients_seconds=0.0, **settings)
    try:
        seed = federation.seed(MODEL)
        report = federation.run(
            federation.sessions._rounds.run(
                "s", config, parse_aggregator(config.aggregator), 1, seed, ServerOptState()
            )
        )
        assert report.record.status == RoundStatus.FINISHED, report.record.reason
        staging = tmp_path / "staging"
        assert not staging.exists() or not list(staging.iterdir())  # no partial left behind
        return report, stored_params(federation.models, report.record.model_out)
    finally:
        federation.close()


def test_an_altered_partial_among_three_is_refused_and_the_round_goes_on(tmp_path):
    report, params = _round(tmp_path, 3, partial_check_ratio=PARTIAL_CHECK_RATIO)
    refused = [e for e in report.events if e.kind == "partial_rejected"]
    assert [e.source for e in refused] == ["combiner-2"]
    assert "coordinate-wise median" in refused[0].message
    assert sorted(report.record.participants) == ["client-0", "client-1"]
    np.testing.assert_allclose(params["w"], (10 * 1 + 20 * 2) / 30, rtol=1e-6)


def test_with_the_check_off_or_two_combiners_the_altered_partial_counts(tmp_path):
    # client 2 (30 of 60 examples) sends its partial + 100; client 1 (20 of 30) in the pair
    for name, combiners, ratio, altered in (("off", 3, 0.0, 50.0), ("two", 2, 4.0, 66.666)):
        report, params = _round(tmp_path / name, combiners, partial_check_ratio=ratio)
        assert not [e for e in report.events if e.kind == "partial_rejected"]
        honest = sum(10 * (i + 1) ** 2 for i in range(combiners)) / (
            5 * combiners * (combiners + 1)
        )
        np.testing.assert_allclose(params["w"], honest + altered, rtol=1e-4)
