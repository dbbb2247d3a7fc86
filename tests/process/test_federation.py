"""The three tiers as real processes on loopback: exact FedAvg across tiers, rejected
updates, and crashes (kill -9) of a client and of a combiner in the middle of a session."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stratafl.launch.federation import LocalFederation
from stratafl.settings import SessionConfig

pytestmark = pytest.mark.slow


def _final_params(fed: LocalFederation, model_id: str | None) -> dict[str, np.ndarray]:
    assert model_id is not None
    return fed.client.download_params(model_id)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_fedavg_across_two_combiners_is_exact_and_the_trail_grows(federation):
    # Client i adds i+1 to every weight and reports 10*(i+1) examples, so FedAvg of one
    # round from zeros is sum((i+1)^2) / sum(i+1) = 30 / 10 = 3.0 exactly.
    with federation(clients=4, combiners=2) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(4)
        # Round 1 caps each update at ratio x the lower median of its combiner's claims:
        # with two clients a combiner (10 and 40 examples at worst), a ratio of 4 keeps
        # every honest weight whole, so the model is the exact FedAvg.
        config = SessionConfig(rounds=2, min_clients=4, weight_cap_ratio=4)
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        assert [r.status for r in rounds] == ["finished", "finished"]
        combiners_used = {o.combiner_id for o in rounds[0].outcomes}
        assert combiners_used == {"combiner-0", "combiner-1"}
        params = _final_params(fed, session.final_model_id)
        np.testing.assert_array_equal(params["w"], np.full(1000, 6.0, np.float32))
        assert session.final_model_id is not None
        trail = fed.client.trail(session.final_model_id)
        assert [m.id for m in trail][-1] == seed.id and len(trail) == 3
        assert trail[0].parent_id == trail[1].id
        first = rounds[0]
        assert sorted(first.participants) == [f"client-{i}" for i in range(4)]
        model_bytes = 1003 * 4
        assert first.traffic.clients_up >= 4 * model_bytes
        assert first.traffic.clients_down >= 8 * model_bytes  # train + validate
        assert first.traffic.combiners_up >= 2 * model_bytes
        assert first.validation.mean("mean_w") == pytest.approx(3.0)
        assert set(first.validation.per_client) == {f"client-{i}" for i in range(4)}
        combiners = fed.client.combiners()
        assert {c.status for c in combiners} == {"online"}


def test_a_poisoned_update_is_rejected_and_the_round_goes_on(federation, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_POISON", "client-1")
    with federation(clients=3, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(3)
        session, rounds = fed.run_session(SessionConfig(rounds=1, min_clients=2))
        assert session.status == "finished", session.reason
        outcome = {o.client_id: o for o in rounds[0].outcomes}
        assert outcome["client-1"].status == "rejected"
        assert "NaN" in outcome["client-1"].reason
        assert sorted(rounds[0].participants) == ["client-0", "client-2"]
        # FedAvg of clients 0 and 2 only: (10*1 + 30*3) / 40 = 2.5
        params = _final_params(fed, session.final_model_id)
        np.testing.assert_allclose(params["w"], 2.5)


def test_too_few_updates_fail_the_round_with_a_recorded_reason(federation, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_POISON", "client-0")
    with federation(clients=2, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        session, rounds = fed.run_session(SessionConfig(rounds=2, min_clients=2))
        assert session.status == "failed"
        assert rounds[0].status == "failed"
        assert "min_clients is 2" in rounds[0].reason
        assert len(fed.client.models()) == 1  # only the seed: nothing half-made


def test_kill_9_of_a_client_mid_round_leaves_the_round_to_the_rest(
    federation, tmp_path, monkeypatch
):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("STRATA_TEST_MARKERS", str(markers))
    monkeypatch.setenv("STRATA_TEST_TRAIN_SECONDS", "2")
    with federation(clients=4, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(4)
        session = fed.client.start_session(SessionConfig(rounds=1, min_clients=2, round_timeout=60))
        _wait_for(
            lambda: (markers / "client-0.training").exists(), 30, "client-0 to start training"
        )
        victim = next(t for t in fed.group.tiers if t.name == "client-0")
        victim.kill()
        _wait_for(
            lambda: fed.client.session(session.id).status != "running",
            60,
            "the session to end",
        )
        session = fed.client.session(session.id)
        rounds = fed.client.rounds(session.id)
        assert session.status == "finished", session.reason
        outcome = {o.client_id: o for o in rounds[0].outcomes}
        assert outcome["client-0"].status == "dropped"  # noticed at once, not at the timeout
        assert sorted(rounds[0].participants) == ["client-1", "client-2", "client-3"]


def test_kill_9_of_a_combiner_moves_its_clients_and_the_next_round_completes(
    federation, monkeypatch
):
    monkeypatch.setenv("STRATA_TEST_TRAIN_SECONDS", "0.5")
    with federation(clients=6, combiners=2) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(6)
        config = SessionConfig(rounds=4, min_clients=2, round_timeout=60)
        session = fed.client.start_session(config)
        rounds_of = lambda: fed.client.rounds(session.id)  # noqa: E731
        _wait_for(lambda: len(rounds_of()) >= 1, 60, "round 1")
        next(t for t in fed.group.tiers if t.name == "combiner-0").kill()
        killed_at = time.time()
        _wait_for(
            lambda: fed.client.session(session.id).status != "running",
            120,
            "the session to end",
        )
        session = fed.client.session(session.id)
        rounds = rounds_of()
        assert session.status == "finished", session.reason
        assert [r.status for r in rounds] == ["finished"] * 4
        after_the_kill = [r for r in rounds if r.started_at > killed_at]
        assert after_the_kill, "the session ended before the kill; nothing was tested"
        survivors = {o.combiner_id for r in after_the_kill for o in r.outcomes}
        assert survivors == {"combiner-1"}
        status = {c.id: c.status for c in fed.client.combiners()}
        assert status == {"combiner-0": "offline", "combiner-1": "online"}

        def all_moved() -> bool:
            clients = fed.client.clients()
            on_survivor = [c for c in clients if c.status == "connected"]
            return len(on_survivor) == 6 and {c.combiner_id for c in on_survivor} == {"combiner-1"}

        _wait_for(all_moved, 30, "every client to reconnect to combiner-1")
        # A round started after the move reaches every client through the survivor.
        session, rounds = fed.run_session(SessionConfig(rounds=1, min_clients=6))
        assert session.status == "finished", session.reason
        assert sorted(rounds[0].participants) == [f"client-{i}" for i in range(6)]


def test_a_straggler_past_the_timeout_is_left_out_and_its_late_update_refused(
    federation, monkeypatch
):
    monkeypatch.setenv("STRATA_TEST_SLOW", "client-2")
    with federation(clients=3, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(3)
        config = SessionConfig(rounds=1, min_clients=2, round_timeout=5, validate_each_round=False)
        session, rounds = fed.run_session(config)
        assert session.status == "finished", session.reason
        outcome = {o.client_id: o for o in rounds[0].outcomes}
        assert outcome["client-2"].status == "timeout"
        assert "no answer within 5 s" in outcome["client-2"].reason
        assert sorted(rounds[0].participants) == ["client-0", "client-1"]
        # FedAvg of clients 0 and 1 only: (10*1 + 20*2) / 30
        params = _final_params(fed, session.final_model_id)
        np.testing.assert_allclose(params["w"], 50 / 30, rtol=1e-6)


def test_the_controller_runs_on_postgresql(federation, postgres_url):
    with federation(clients=2, combiners=1, database_url=postgres_url) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        session, rounds = fed.run_session(SessionConfig(rounds=2, min_clients=2))
        assert session.status == "finished", session.reason
        assert session.final_model_id is not None
        assert len(fed.client.trail(session.final_model_id)) == 3
    from stratafl.store.state import StateStore

    state = StateStore(postgres_url).open()
    try:
        assert [r.number for r in state.rounds(session.id)] == [1, 2]
        assert {c.status for c in state.combiners()} <= {"online", "offline"}
    finally:
        state.close()
