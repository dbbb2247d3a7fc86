"""One contract for the state store, run against every backend: SQLite (the embedded
default) and the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from stratafl.errors import NotFoundError
from stratafl.records import ClientOutcome, RoundRecord, Traffic, Validation
from stratafl.status import (
    ClientStatus,
    CombinerStatus,
    OutcomeStatus,
    RoundStatus,
    SessionStatus,
)


def _round(**changes) -> RoundRecord:
    record = RoundRecord(
        session_id="s",
        number=1,
        status=RoundStatus.FINISHED,
        model_in="seed",
        model_out="m1",
        started_at=1.0,
        duration=0.5,
        participants=["c1", "c2"],
        outcomes=[
            ClientOutcome(
                client_id="c1",
                combiner_id="a",
                status=OutcomeStatus.OK,
                num_examples=32,
                metrics={"loss": 0.25},
                bytes_up=100,
                bytes_down=200,
                seconds=0.4,
            ),
            ClientOutcome(client_id="c2", status=OutcomeStatus.REJECTED, reason="NaN in 'w'"),
        ],
        validation=Validation(
            clients=1, per_client={"c1": {"accuracy": 0.9}}, accuracy=0.9, loss=0.3
        ),
        traffic=Traffic(clients_up=10, clients_down=20, combiners_up=30, combiners_down=40),
        timings={"train": 0.4, "reduce": 0.05},
    )
    return record.model_copy(update=changes)


def test_liveness_of_combiners_and_clients_is_recorded(store):
    store.register_combiner("a", "127.0.0.1:1", 10)
    store.combiner_heartbeat("a", ["c1", "c2"])
    (combiner,) = store.combiners()
    assert combiner.status is CombinerStatus.ONLINE and combiner.num_clients == 2
    assert combiner.last_heartbeat >= combiner.registered_at
    assert {c.id: c.status for c in store.clients()} == {"c1": "connected", "c2": "connected"}
    store.set_combiner_status("a", CombinerStatus.OFFLINE)
    assert store.combiners()[0].status is CombinerStatus.OFFLINE
    assert {c.status for c in store.clients()} == {ClientStatus.DISCONNECTED}
    store.set_client("c1", "b", ClientStatus.ASSIGNED)
    assert {c.id: c.combiner_id for c in store.clients()}["c1"] == "b"
    store.register_combiner("a", "127.0.0.1:9", 5)  # a restarted combiner re-registers
    (combiner,) = store.combiners()
    assert (combiner.address, combiner.max_clients, combiner.status) == ("127.0.0.1:9", 5, "online")


def test_statuses_are_stored_as_plain_text(store):
    """Readable with any SQL client, and equal to the enum's value on every driver."""
    store.register_combiner("a", "127.0.0.1:1", 10)
    store.set_client("c1", "a", ClientStatus.ASSIGNED)
    store.create_session("s", {}, "seed")
    store.add_round(_round())
    engine = create_engine(store.url)
    try:
        with engine.connect() as db:
            statuses = [
                db.execute(text(f"SELECT status FROM {table}")).scalar_one()
                for table in ("combiners", "clients", "sessions", "rounds")
            ]
    finally:
        engine.dispose()
    assert statuses == ["online", "assigned", "running", "finished"]
    assert all(type(status) is str for status in statuses)


def test_the_model_trail_goes_back_to_the_seed(store):
    assert store.newest_model() is None
    seed = store.add_model(
        "seed",
        parent_id=None,
        session_id=None,
        round_number=None,
        size_bytes=5 * 2**30,
        num_parameters=3 * 2**30,
    )
    assert seed == store.model("seed")
    store.add_model(
        "m1", parent_id="seed", session_id="s", round_number=1, size_bytes=1, num_parameters=1
    )
    store.add_model(
        "m2", parent_id="m1", session_id="s", round_number=2, size_bytes=1, num_parameters=1
    )
    assert [m.id for m in store.trail("m2")] == ["m2", "m1", "seed"]
    assert store.model("seed").size_bytes == 5 * 2**30  # models larger than 2 GiB
    assert [m.id for m in store.models("s")] == ["m1", "m2"]
    assert [m.id for m in store.models()] == ["seed", "m1", "m2"]
    newest = store.newest_model()
    assert newest is not None and newest.id == "m2" and newest.round == 2
    with pytest.raises(NotFoundError, match="'nope' is not in the model trail.*GET /api/v1/models"):
        store.model("nope")
    orphan = {"session_id": None, "round_number": None, "size_bytes": 1, "num_parameters": 1}
    store.add_model("orphan", parent_id="gone", **orphan)
    with pytest.raises(NotFoundError, match="'gone'"):
        store.trail("orphan")


def test_sessions_and_rounds_round_trip_with_their_json(store):
    created = store.create_session("s", {"rounds": 2, "aggregator": "median"}, "seed")
    assert created == store.session("s") and created.final_model_id == "seed"
    store.add_round(_round())
    store.update_session("s", rounds_done=1, final_model_id="m1")
    session = store.session("s")
    assert session.config["aggregator"] == "median" and session.status is SessionStatus.RUNNING
    (row,) = store.rounds("s")
    assert row.outcomes[0].metrics["loss"] == 0.25
    assert row.validation.per_client["c1"]["accuracy"] == 0.9
    assert [s.id for s in store.running_sessions()] == ["s"]
    assert [s.id for s in store.sessions()] == ["s"]
    with pytest.raises(NotFoundError, match="GET /api/v1/sessions"):
        store.session("nope")
    with pytest.raises(NotFoundError):
        store.update_session("nope", rounds_done=1)


def test_a_round_record_comes_back_whole(store):
    """Outcomes, the validation means (extra fields), traffic and timings survive JSON."""
    first, second = _round(), _round(number=2, status=RoundStatus.FAILED, reason="too few")
    store.add_round(second)
    store.add_round(first)
    store.add_round(_round(session_id="other"))
    assert store.rounds("s") == [first, second]
    back = store.rounds("s")[0]
    assert back.validation.mean("accuracy") == 0.9 and back.validation.mean("loss") == 0.3
    assert back.outcomes[1].status is OutcomeStatus.REJECTED
    assert back.traffic.combiners_down == 40
    assert store.rounds("nope") == []


def test_update_session_changes_only_the_fields_it_is_given(store):
    before = store.create_session("s", {"rounds": 3}, "seed")
    store.update_session("s", rounds_done=1)
    assert store.session("s") == before.model_copy(update={"rounds_done": 1})
    store.update_session("s", final_model_id="m1")
    assert store.session("s") == before.model_copy(
        update={"rounds_done": 1, "final_model_id": "m1"}
    )
    store.update_session("s", status=SessionStatus.FINISHED, reason="done", finished_at=9.0)
    assert store.session("s") == before.model_copy(
        update={
            "rounds_done": 1,
            "final_model_id": "m1",
            "status": SessionStatus.FINISHED,
            "reason": "done",
            "finished_at": 9.0,
        }
    )


def test_events_come_back_oldest_first_and_limited(store):
    for i in range(5):
        store.add_event("kind", "test", f"event {i}", index=i)
    events = store.events(limit=3)
    assert [e.message for e in events] == ["event 2", "event 3", "event 4"]
    assert events[-1].data == {"index": 4}
    assert events[0].id < events[1].id < events[2].id
