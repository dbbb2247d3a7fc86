"""One contract for the state store, run against every backend: SQLite (the embedded
default) and the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stratafl.errors import NotFoundError
from stratafl.store.state import StateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    state = StateStore(url).open()
    yield state
    state.close()


def test_liveness_of_combiners_and_clients_is_recorded(store):
    store.register_combiner("a", "127.0.0.1:1", 10)
    store.combiner_heartbeat("a", ["c1", "c2"])
    (combiner,) = store.combiners()
    assert combiner["status"] == "online" and combiner["num_clients"] == 2
    assert combiner["last_heartbeat"] >= combiner["registered_at"]
    assert {c["id"]: c["status"] for c in store.clients()} == {"c1": "connected", "c2": "connected"}
    store.set_combiner_status("a", "offline")
    assert store.combiners()[0]["status"] == "offline"
    assert {c["status"] for c in store.clients()} == {"disconnected"}
    store.set_client("c1", "b", "assigned")
    assert {c["id"]: c["combiner_id"] for c in store.clients()}["c1"] == "b"


def test_the_model_trail_goes_back_to_the_seed(store):
    store.add_model(
        "seed",
        parent_id=None,
        session_id=None,
        round_number=None,
        size_bytes=5 * 2**30,
        num_parameters=3 * 2**30,
    )
    store.add_model(
        "m1", parent_id="seed", session_id="s", round_number=1, size_bytes=1, num_parameters=1
    )
    store.add_model(
        "m2", parent_id="m1", session_id="s", round_number=2, size_bytes=1, num_parameters=1
    )
    assert [m["id"] for m in store.trail("m2")] == ["m2", "m1", "seed"]
    assert store.model("seed")["size_bytes"] == 5 * 2**30  # models larger than 2 GiB
    assert [m["id"] for m in store.models("s")] == ["m1", "m2"]
    with pytest.raises(NotFoundError, match="'nope' is not in the model trail"):
        store.model("nope")


def test_sessions_and_rounds_round_trip_with_their_json(store):
    store.create_session("s", {"rounds": 2, "aggregator": "median"}, "seed")
    store.add_round(
        session_id="s",
        number=1,
        status="finished",
        reason="",
        model_in="seed",
        model_out="m1",
        started_at=1.0,
        duration=0.5,
        participants=["c1"],
        outcomes=[{"client_id": "c1", "status": "ok", "metrics": {"loss": 0.25}}],
        validation={"accuracy": 0.9, "per_client": {"c1": {"accuracy": 0.9}}},
        traffic={"clients_up": 10},
        timings={"train": 0.4},
    )
    store.update_session("s", rounds_done=1, final_model_id="m1")
    session = store.session("s")
    assert session["config"]["aggregator"] == "median" and session["status"] == "running"
    (row,) = store.rounds("s")
    assert row["outcomes"][0]["metrics"]["loss"] == 0.25
    assert row["validation"]["per_client"]["c1"]["accuracy"] == 0.9
    assert store.fail_interrupted_sessions("controller restarted") == ["s"]
    assert store.session("s")["status"] == "failed"
    assert store.fail_interrupted_sessions("again") == []
    with pytest.raises(NotFoundError):
        store.session("nope")


def test_events_come_back_oldest_first_and_limited(store):
    for i in range(5):
        store.add_event("kind", "test", f"event {i}", index=i)
    events = store.events(limit=3)
    assert [e["message"] for e in events] == ["event 2", "event 3", "event 4"]
    assert events[-1]["data"] == {"index": 4}
