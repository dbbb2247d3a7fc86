"""The state store's progress methods (`stratafl.store.progress`), against every backend:
a round and its session's progress in one transaction, sessions left running, pruning."""

from __future__ import annotations

import pytest

from stratafl.errors import NotFoundError, StrataError
from stratafl.records import RoundRecord
from stratafl.settings import BestModel
from stratafl.status import RoundStatus, SessionStatus
from stratafl.store.state import StateStore


def _model(store: StateStore, model_id: str, parent: str | None, number: int | None) -> None:
    session = None if number is None else "s"
    store.add_model(
        model_id,
        parent_id=parent,
        session_id=session,
        round_number=number,
        size_bytes=10,
        num_parameters=2,
    )


def _round(number: int, status: RoundStatus, model_out: str | None) -> RoundRecord:
    return RoundRecord(
        session_id="s",
        number=number,
        status=status,
        model_in="seed",
        model_out=model_out,
        started_at=1.0,
        duration=0.5,
    )


def test_a_finished_round_moves_its_session_on_and_a_failed_one_does_not(store):
    _model(store, "seed", None, None)
    store.create_session("s", {"rounds": 2}, "seed")
    _model(store, "m1", "seed", 1)
    store.finish_round(_round(1, RoundStatus.FAILED, None), final_model_id=None)
    store.finish_round(_round(1, RoundStatus.FINISHED, "m1"), final_model_id="m1")
    session = store.session("s")
    assert (session.rounds_done, session.final_model_id) == (1, "m1")
    assert [(r.number, r.status) for r in store.rounds("s")] == [(1, "failed"), (1, "finished")]


@pytest.mark.parametrize(
    ("lowest", "best"), [(False, ("m2", 0.9)), (True, ("m1", 0.5))], ids=["max", "min"]
)
def test_the_session_names_its_best_model_by_its_score_the_first_to_reach_it(store, lowest, best):
    _model(store, "seed", None, None)
    store.create_session("s", {}, "seed")
    for number, score in enumerate([0.5, 0.9, 0.9, 0.7], start=1):
        _model(store, f"m{number}", "seed", number)
        record = _round(number, RoundStatus.FINISHED, f"m{number}")
        store.finish_round(record, final_model_id=f"m{number}", best=BestModel(score, lowest))
    store.finish_round(_round(5, RoundStatus.FAILED, None), final_model_id=None)
    session = store.session("s")
    assert (session.best_model_id, session.best_score) == best
    assert session.final_model_id == "m4"


def test_a_round_is_recorded_with_its_progress_or_not_at_all(store):
    _model(store, "seed", None, None)
    store.create_session("s", {}, "seed")
    with pytest.raises(StrataError, match="only a finished round's own model"):
        store.finish_round(_round(1, RoundStatus.FINISHED, "m1"), final_model_id="other")
    with pytest.raises(NotFoundError):
        store.finish_round(
            _round(1, RoundStatus.FAILED, None).model_copy(update={"session_id": "nope"}),
            final_model_id=None,
        )
    assert store.rounds("s") == [] and store.rounds("nope") == []
    assert store.session("s").rounds_done == 0


def test_running_sessions_come_newest_first(store):
    _model(store, "seed", None, None)
    for session_id in ("a", "b", "c"):
        store.create_session(session_id, {}, "seed")
    store.update_session("b", status=SessionStatus.FINISHED)
    assert [s.id for s in store.running_sessions()] == ["c", "a"]


def test_pruned_models_keep_their_rows_and_their_first_pruning_time(store):
    _model(store, "seed", None, None)
    _model(store, "m1", "seed", 1)
    store.mark_pruned(["m1"], when=5.0)
    store.mark_pruned(["m1", "seed"], when=9.0)
    store.mark_pruned([])
    assert store.model("m1").pruned_at == 5.0 and store.model("seed").pruned_at == 9.0
    assert [m.id for m in store.trail("m1")] == ["m1", "seed"]


def test_only_a_model_nothing_refers_to_can_be_unlisted(store):
    _model(store, "seed", None, None)
    store.create_session("s", {}, "seed")
    _model(store, "m1", "seed", 1)
    _model(store, "m2", "m1", 2)
    for referred in ("seed", "m1"):  # a session's seed; a model's parent
        with pytest.raises(StrataError, match=f"model {referred} is referred to"):
            store.delete_model(referred)
    store.delete_model("m2")
    assert [m.id for m in store.models()] == ["seed", "m1"]
