"""Receipts in one event loop: the controller's round runner, the reducer and the
combiners' round runners are the real code. A combiner that adds to what its clients said
(its answer doctored on its way back, as a hostile combiner would send it) loses its
partial; a client that signs badly on an honest combiner loses only its own update."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from stratafl.aggregate import ServerOptState, parse_aggregator
from stratafl.combiner.receipts import UPDATE_RECEIPT_FAILS
from stratafl.controller.link import CombinerAnswer, RoundTask
from stratafl.params import TensorSpec
from stratafl.records import ClientOutcome
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, TaskKind
from tests.support.inprocess import Behaviour, InProcessFederation, LocalLink, stored_params

H = Behaviour.HONEST
MODEL = {"w": np.zeros((8, 4), np.float32), "b": np.zeros(4, np.float32)}


class InventingLink(LocalLink):
    """Relays its combiner's answer with a made-up client added: 1e15 examples in
    training (the weight inflated to match), an accuracy of 0.99 in validation."""

    async def run_round(
        self, task: RoundTask, clients: Sequence[str], staging: Path, expect: Sequence[TensorSpec]
    ) -> CombinerAnswer:
        answer = await super().run_round(task, clients, staging, expect)
        train = task.kind == TaskKind.TRAIN
        answer.outcomes.append(
            ClientOutcome(
                client_id="ghost",
                combiner_id=self.combiner_id,
                status=OutcomeStatus.OK,
                num_examples=10**15 if train else 0,
                metrics={} if train else {"accuracy": 0.99, "num_examples": 1e15},
            )
        )
        answer.receipts.append(bytes(64))
        if train:
            answer.contributors += 1
            answer.total_weight += 10**15
        return answer


class Federation(InProcessFederation):
    def online(self) -> list[LocalLink]:
        return [
            InventingLink(link._combiner, self.receipts) if link.combiner_id == "liar" else link
            for link in super().online()
        ]


def _one_fedavg_round(federation: InProcessFederation, round_timeout: float):
    """Round 1 of a FedAvg session from MODEL (at least 2 clients), then the federation
    closed: its report and the model it made."""
    try:
        seed = federation.seed(MODEL)
        config = SessionConfig(
            round_timeout=round_timeout, wait_for_clients_seconds=0.0, min_clients=2
        )
        report = federation.run(
            federation.sessions._rounds.run(
                "s", config, parse_aggregator("fedavg"), 1, seed, ServerOptState()
            )
        )
        return report, stored_params(federation.models, report.record.model_out)
    finally:
        federation.close()


def test_an_invented_client_is_rejected_and_its_combiner_partial_left_out(tmp_path):
    federation = Federation(tmp_path)
    honest, liar = federation.add_combiner("honest"), federation.add_combiner("liar")
    federation.add_client(honest, 0, H)
    federation.add_client(honest, 1, H)
    federation.add_client(liar, 2, H)
    report, new = _one_fedavg_round(federation, round_timeout=1.0)
    record = report.record
    assert record.status == RoundStatus.FINISHED, record.reason
    ghost = next(o for o in record.outcomes if o.client_id == "ghost")
    assert ghost.status == OutcomeStatus.REJECTED
    assert "combiner liar reported client ghost" in ghost.reason
    assert [e.kind for e in report.events] == ["partial_rejected"]
    # FedAvg of the honest combiner's clients alone: (1*10 + 2*20) / 30
    np.testing.assert_allclose(new["w"], 50 / 30, rtol=1e-6)
    # validation: the ghost's 0.99 is not a score; client i scores i, weighted 10(i+1)
    assert set(record.validation.per_client) == {"client-0", "client-1", "client-2"}
    assert record.validation.mean("accuracy") == pytest.approx((0 * 10 + 0.25 * 20 + 0.5 * 30) / 60)


def test_a_bad_receipt_is_rejected_at_its_honest_combiner_and_the_round_goes_on(tmp_path):
    """One combiner, three clients, one of them signing with another client's key: the
    combiner folds nothing of it, so its partial verifies and the round is the exact
    FedAvg of the other two (before, the whole partial failed at the controller)."""
    federation = InProcessFederation(tmp_path)
    combiner = federation.add_combiner("only")
    federation.add_client(combiner, 0, H)
    federation.add_client(combiner, 1, Behaviour.BAD_RECEIPT)
    federation.add_client(combiner, 2, H)
    report, new = _one_fedavg_round(federation, round_timeout=5.0)
    record = report.record
    assert record.status == RoundStatus.FINISHED, record.reason
    assert not report.events, "no partial is rejected"
    bad = next(o for o in record.outcomes if o.client_id == "client-1")
    assert bad.status == OutcomeStatus.REJECTED
    assert bad.reason == UPDATE_RECEIPT_FAILS
    assert {o.client_id for o in record.outcomes if o.status == OutcomeStatus.OK} == {
        "client-0",
        "client-2",
    }
    # FedAvg of clients 0 and 2 alone, exactly: (1*10 + 3*30) / 40
    np.testing.assert_allclose(new["w"], 100 / 40, rtol=1e-6)
    np.testing.assert_allclose(new["b"], 100 / 40, rtol=1e-6)
    # its validation report is refused at the combiner too: not a score
    assert set(record.validation.per_client) == {"client-0", "client-2"}
