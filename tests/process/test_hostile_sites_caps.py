"""Enrolled hostile sites against caps and checks (issue 19): real processes on loopback,
every token issued by the admin as usual (tests/support/hostile.py, hostile_combiner.py).

    a client update of 70.0 claiming 1e9 examples (under the session's explicit limit)
        -> test_a_client_claiming_1e9_examples_weighs_at_most_three_median_clients
    a validation report of accuracy 1e12
        -> test_a_validation_report_of_accuracy_1e12_is_refused
    a combiner that alters its partial, among three combiners
        -> test_a_partial_altered_by_its_combiner_is_refused_by_the_reducer

The honest clients of the test app add i+1 to every weight and claim 10*(i+1) examples;
each test computes the model the caps give exactly (`capped_fedavg`), which for honest
clients alone is their plain FedAvg whenever no claim is over three lower medians.
"""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.aggregate.weights import capped_weights
from stratafl.proto import stratafl_pb2 as pb
from stratafl.records import ClientOutcome
from stratafl.settings import PARTIAL_CHECK_RATIO, WEIGHT_CAP_RATIO, SessionConfig
from tests.support.hostile import (
    Attacker,
    HostileClient,
    enrolled_client,
    fedavg_shift,
    run_session_strictly,
    script_errors,
    shifted,
    start_clients,
    wait_until,
)
from tests.support.hostile_combiner import ALTERATION, start_hostile_combiner

pytestmark = pytest.mark.slow

SIZE = 1000
"""The test app's model: w of SIZE weights (STRATA_TEST_PARAMS' default) and b of 3."""
HOSTILE_VALUE = 70.0
"""Not 7.0: with these weights 7.0 is also where two capped rounds happen to end."""
HOSTILE_CLAIM = 10**9


def _client_index(outcome: ClientOutcome) -> int:
    return int(outcome.client_id.removeprefix("client-"))


def capped_fedavg(outcomes: list[ClientOutcome]) -> float:
    """The shift one round of the honest test clients ``outcomes`` adds to every weight,
    each weighted by its claim capped at 3 lower medians of its combiner's claims (round
    1 of a session: no verified history yet)."""
    total = weighted = 0.0
    for combiner in {o.combiner_id for o in outcomes}:
        mine = [o for o in outcomes if o.combiner_id == combiner]
        weights = capped_weights(
            [o.num_examples for o in mine], weight_cap=0, median_cap_ratio=WEIGHT_CAP_RATIO
        )
        total += sum(weights)
        weighted += sum(w * (_client_index(o) + 1) for w, o in zip(weights, mine, strict=True))
    return weighted / total


def test_a_client_claiming_1e9_examples_weighs_at_most_three_median_clients(federation):
    def inflate(client: HostileClient, task: pb.Task) -> None:
        if task.kind == pb.TRAIN:
            client.upload(task, shifted(SIZE, HOSTILE_VALUE), HOSTILE_CLAIM)
        else:
            client.report_failure(task)

    with federation(clients=3, combiners=1) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        mallory = enrolled_client(attacker, "client-9", inflate)
        fed.wait_for_clients(4)
        config = SessionConfig(
            rounds=2, min_clients=4, seed_model_id=seed.id, validate_each_round=False
        )
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", (session.reason, [r.reason for r in rounds])
        # Its claim is under max_examples_per_client (1e9): accepted, and clamped. Round 1
        # caps at 3 x the lower median of the combiner's claims (10, 20, 30, 1e9 -> 60),
        # round 2 at 3 x the lower median of the counts round 1 verified (also 60).
        weights = {0: 10.0, 1: 20.0, 2: 30.0}
        cap = WEIGHT_CAP_RATIO * 20
        model = 0.0
        for record in rounds:
            outcome = {o.client_id: o for o in record.outcomes}
            assert outcome["client-9"].status == "ok"
            assert outcome["client-9"].num_examples == HOSTILE_CLAIM
            honest = sum(n * (model + i + 1) for i, n in weights.items())
            model = (honest + cap * HOSTILE_VALUE) / (sum(weights.values()) + cap)
        assert session.final_model_id is not None  # round 1's model is pruned by now
        params = fed.client.download_params(session.final_model_id)
        np.testing.assert_allclose(params["w"], model, rtol=1e-6)
        assert not np.allclose(params["w"], HOSTILE_VALUE)
        assert script_errors(mallory) == []


def test_a_validation_report_of_accuracy_1e12_is_refused(federation):
    def boast(client: HostileClient, task: pb.Task) -> None:
        if task.kind == pb.TRAIN:
            client.report_failure(task)
        else:
            client.report_validation(task, {"accuracy": 1e12, "loss": 0.0, "num_examples": 1.0})

    with federation(clients=3, combiners=1) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        mallory = enrolled_client(attacker, "client-9", boast)
        fed.wait_for_clients(4)
        config = SessionConfig(rounds=1, min_clients=3, seed_model_id=seed.id)
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", (session.reason, [r.reason for r in rounds])
        shift = fedavg_shift([0, 1, 2])
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        np.testing.assert_allclose(params["w"], shift, rtol=1e-6)
        validation = rounds[0].validation
        assert set(validation.per_client) == {"client-0", "client-1", "client-2"}
        assert validation.mean("accuracy") == pytest.approx(1 / (1 + shift))
        wait_until(lambda: len(mallory.acks) == 2, 10, "the attacker's two answers")
        (report,) = [ack for what, _, ack in mallory.acks if what == "validation"]
        assert not report.ok
        assert "'accuracy' is a rate and must lie in [0, 1]" in report.message
        assert "\n" not in report.message
        assert script_errors(mallory) == []


def test_a_partial_altered_by_its_combiner_is_refused_by_the_reducer(federation):
    with federation(clients=0, combiners=2) as fed:
        seed = fed.upload_seed_model()
        start_hostile_combiner(fed, "combiner-x")
        start_clients(fed, 6)
        fed.wait_for_clients(6)
        config = SessionConfig(
            rounds=1,
            min_clients=2,
            seed_model_id=seed.id,
            validate_each_round=False,
            partial_check_ratio=PARTIAL_CHECK_RATIO,
        )
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", (session.reason, [r.reason for r in rounds])
        events = fed.client.events(limit=1000, session_id=session.id)
        refused = [e for e in events if e.kind == "partial_rejected"]
        assert [e.source for e in refused] == ["combiner-x"], [e.message for e in events]
        assert "median distance" in refused[0].message
        assert "\n" not in refused[0].message
        outcomes = [o for o in rounds[0].outcomes if o.status == "ok"]
        assert {o.combiner_id for o in outcomes} == {"combiner-0", "combiner-1"}
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        expected = capped_fedavg(outcomes)
        np.testing.assert_allclose(params["w"], expected, rtol=1e-6)
        assert float(params["w"][0]) < ALTERATION
