"""Aggregation rules and server optimisers run through the real tiers (processes on loopback).

The test app's client i adds i+1 to every weight, so each rule's result is easy to predict.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from stratafl.launch.federation import LocalFederation
from stratafl.modelfile.codec import copy_params_from_file
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow


def _model(federation: LocalFederation, model_id: str | None) -> dict[str, np.ndarray]:
    return copy_params_from_file(
        federation.workdir / "controller" / "models" / f"{model_id}.safetensors"
    )


def test_median_with_one_combiner_equals_the_flat_median(federation):
    with federation(clients=5, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(5)
        config = SessionConfig(rounds=1, min_clients=5, aggregator="median")
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        # shifts 1..5 (weights 10..50 ignored by the median): the median is 3
        np.testing.assert_array_equal(_model(fed, session.final_model_id)["w"], 3.0)


def test_krum_keeps_out_a_boosted_update_and_a_nan_update_is_rejected(federation, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_POISON", "client-5")
    monkeypatch.setenv("STRATA_TEST_BOOST", "client-4")
    with federation(clients=6, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(6)
        config = SessionConfig(rounds=1, min_clients=5, aggregator="krum:f=1")
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        outcome = {o.client_id: o.status for o in rounds[0].outcomes}
        assert outcome["client-5"] == "rejected"
        # shifts 1, 2, 3, 4 and a boosted 500: Krum scores each update by its squared
        # distances to its n-f-2 = 2 nearest neighbours; 2 and 3 score best (1 + 1).
        w = _model(fed, session.final_model_id)["w"]
        assert w[0] in (2.0, 3.0)
        np.testing.assert_array_equal(w, w[0])
        # the round says whose update counted: the winner's, shifted by w; the other
        # accepted updates are ok but left out, and the rejected one is not "left out"
        winner = f"client-{int(w[0]) - 1}"
        left_out = {o.client_id: o.left_out for o in rounds[0].outcomes}
        assert left_out[winner] == "" and left_out["client-5"] == ""
        for client in {"client-0", "client-1", "client-2", "client-3", "client-4"} - {winner}:
            assert outcome[client] == "ok" and "krum keeps the one update" in left_out[client]


def test_too_few_updates_for_krum_at_a_combiner_fails_the_round_with_the_reason(federation):
    with federation(clients=6, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(6)
        config = SessionConfig(rounds=1, min_clients=5, aggregator="krum:f=1")
        session, rounds = fed.run_session(config)
        assert session.status == "failed"
        assert "krum with f=1 needs at least 5 updates" in rounds[0].reason
        assert len(fed.client.models()) == 1


def test_server_momentum_state_survives_a_controller_crash(federation):
    with federation(clients=2, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        # FedAvg of shifts 1 and 2 weighted 10:20 is +5/3 per round; FedAvgM(lr=1, beta=0.5)
        # moves by m1 = 5/3, then m2 = 0.5 * 5/3 + 5/3 = 2.5.
        config = SessionConfig(
            rounds=1, min_clients=2, aggregator="fedavgm:server_lr=1.0,momentum=0.5"
        )
        session, _ = fed.run_session(config)
        assert session.status == "finished", session.reason
        first = session.final_model_id
        np.testing.assert_allclose(_model(fed, first)["w"], 5 / 3, rtol=1e-6)

        config = config.model_copy(update={"seed_model_id": first, "rounds": 2})
        session = fed.client.start_session(config)
        fed.restart_controller()  # kill -9 mid-session, then a new process, same state
        deadline = time.monotonic() + 120
        while fed.client.session(session.id).status == "running":  # it resumes and ends
            assert time.monotonic() < deadline, "the resumed session did not end"
            time.sleep(0.1)
        session = fed.client.session(session.id)
        assert session.status == "finished" and session.rounds_done == 2, session.reason
        assert first in [m.id for m in fed.client.models()]
        # m2 = 0.5 * 5/3 + 5/3 = 2.5, then m3 = 0.5 * 2.5 + 5/3 = 35/12
        w = _model(fed, session.final_model_id)["w"]
        np.testing.assert_allclose(w, 5 / 3 + 2.5 + 35 / 12, rtol=1e-6)
