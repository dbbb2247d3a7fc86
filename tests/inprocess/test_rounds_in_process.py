"""The round logic in one event loop: quorum, timeout, rejection, validation, traffic.

The controller's round runner, session loop and reducer and the combiners' round runners
are the real code (tests/support/inprocess.py replaces only gRPC), so these tests pin the round's
behaviour in a second each; the process tests pin the same over real sockets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from stratafl.aggregate import ServerOptState, parse_aggregator
from stratafl.errors import NotFoundError, RoundFailed
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, SessionStatus
from tests.support.inprocess import Behaviour, InProcessFederation, stored_params

H = Behaviour.HONEST
MODEL = {"w": np.zeros((64, 16), np.float32), "b": np.zeros(16, np.float32)}


def _federation(tmp_path: Path, *groups: list[Behaviour]) -> InProcessFederation:
    """One combiner per group; client indices run on across groups."""
    federation = InProcessFederation(tmp_path)
    index = 0
    for number, behaviours in enumerate(groups):
        combiner = federation.add_combiner(f"combiner-{number}")
        for behaviour in behaviours:
            federation.add_client(combiner, index, behaviour)
            index += 1
    return federation


def _round(federation: InProcessFederation, config: SessionConfig, model_id: str):
    aggregator = parse_aggregator(config.aggregator)
    return federation.run(
        federation.sessions._rounds.run("s", config, aggregator, 1, model_id, ServerOptState())
    )


def _config(**changes: object) -> SessionConfig:
    return SessionConfig(round_timeout=1.0, wait_for_clients_seconds=0.0, **changes)


def _staging_is_empty(federation: InProcessFederation) -> bool:
    staging = federation.workdir / "staging"
    return not staging.exists() or not list(staging.iterdir())


def test_fedavg_over_three_combiners_is_exact_and_every_partial_is_counted(tmp_path):
    federation = _federation(tmp_path, [H, H], [H], [H])
    try:
        seed = federation.seed(MODEL)
        report = _round(federation, _config(min_clients=4), seed)
    finally:
        federation.close()
    record = report.record
    assert record.status == RoundStatus.FINISHED, record.reason
    # client i adds i+1 with 10(i+1) examples: sum (i+1)^2 / sum (i+1) = 30 / 10
    new = stored_params(federation.models, record.model_out)
    assert np.all(new["w"] == 3.0) and np.all(new["b"] == 3.0)
    assert federation.store.model(record.model_out).parent_id == seed
    assert sorted(record.participants) == [f"client-{i}" for i in range(4)]
    model_bytes = sum(a.nbytes for a in MODEL.values())
    # the three partials arrive together; each one's bytes are counted (no lost increment)
    assert record.traffic.combiners_up >= 3 * model_bytes
    assert record.traffic.combiners_up < 4 * model_bytes
    assert record.traffic.clients_up >= 4 * model_bytes
    assert record.traffic.combiners_down >= 3 * model_bytes  # each combiner fetched it once
    assert _staging_is_empty(federation)


def test_a_silent_client_times_out_and_the_round_closes_with_the_others(tmp_path):
    federation = _federation(tmp_path, [H, H, Behaviour.SILENT])
    try:
        report = _round(federation, _config(min_clients=2), federation.seed(MODEL))
    finally:
        federation.close()
    outcomes = {o.client_id: o for o in report.record.outcomes}
    assert report.record.status == RoundStatus.FINISHED
    assert outcomes["client-2"].status == OutcomeStatus.TIMEOUT
    assert "no answer within 1 s" in outcomes["client-2"].reason
    assert report.record.participants == ["client-0", "client-1"]


def test_a_poisoned_update_is_rejected_without_failing_the_round(tmp_path):
    federation = _federation(tmp_path, [H, Behaviour.NAN, H])
    try:
        report = _round(federation, _config(min_clients=2), federation.seed(MODEL))
        new = stored_params(federation.models, report.record.model_out)
    finally:
        federation.close()
    outcomes = {o.client_id: o for o in report.record.outcomes}
    assert outcomes["client-1"].status == OutcomeStatus.REJECTED
    assert "NaN" in outcomes["client-1"].reason
    # FedAvg of clients 0 and 2 only: (1*10 + 3*30) / 40 = 2.5
    assert np.all(new["w"] == 2.5)


def test_too_few_updates_fail_the_round_with_its_reason_and_leave_nothing_behind(tmp_path):
    federation = _federation(tmp_path, [H, Behaviour.FAILS], [Behaviour.DROPS])
    try:
        seed = federation.seed(MODEL)
        report = _round(federation, _config(min_clients=2, aggregator="median"), seed)
    finally:
        federation.close()
    record = report.record
    assert record.status == RoundStatus.FAILED and record.model_out is None
    assert "only 1 of the 3 clients asked returned a usable update" in record.reason
    statuses = {o.client_id: o.status for o in record.outcomes}
    assert statuses == {
        "client-0": OutcomeStatus.OK,
        "client-1": OutcomeStatus.FAILED,
        "client-2": OutcomeStatus.DROPPED,
    }
    assert [m.id for m in federation.store.models()] == [seed]
    assert _staging_is_empty(federation)
    assert not list((tmp_path / "combiner-0" / "updates").glob("*"))


def test_validation_scores_the_new_model_weighted_by_examples(tmp_path):
    federation = _federation(tmp_path, [H, H], [H])
    try:
        report = _round(federation, _config(min_clients=3), federation.seed(MODEL))
    finally:
        federation.close()
    validation = report.record.validation
    assert validation.clients == 3
    # accuracy i / 4 with 10(i+1) examples: (0*10 + 0.25*20 + 0.5*30) / 60
    assert validation.mean("accuracy") == pytest.approx(20 / 60)
    assert set(validation.per_client) == {"client-0", "client-1", "client-2"}


def test_a_combiner_that_is_gone_is_marked_offline_and_the_round_goes_on(tmp_path):
    federation = _federation(tmp_path, [H, H], [H])
    federation.combiners[1].dead = True
    try:
        report = _round(federation, _config(min_clients=2), federation.seed(MODEL))
    finally:
        federation.close()
    assert report.record.status == RoundStatus.FINISHED
    assert "combiner-1" in federation.offline
    assert [e.kind for e in report.events] == ["combiner_failed"]
    assert "combiner failed: combiner combiner-1 is gone" in report.record.reason


def test_a_session_records_each_round_once_and_grows_the_trail(tmp_path):
    federation = _federation(tmp_path, [H, H])

    async def run() -> str:
        session_id = await federation.sessions.start(_config(rounds=3, min_clients=2))
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    try:
        seed = federation.seed(MODEL)
        session_id = federation.run(run())
        session = federation.store.session(session_id)
        rounds = federation.store.rounds(session_id)
        trail = federation.store.trail(session.final_model_id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED and session.rounds_done == 3
    assert [r.number for r in rounds] == [1, 2, 3]
    assert [m.id for m in trail][-1] == seed and len(trail) == 4
    assert [r.model_in for r in rounds[1:]] == [r.model_out for r in rounds[:-1]]


def test_a_failed_round_ends_the_session_with_the_rounds_reason(tmp_path):
    federation = _federation(tmp_path, [H, Behaviour.SILENT])

    async def run() -> str:  # no re-run (test_sessions_in_process.py tests those)
        config = _config(rounds=2, min_clients=2, max_failed_rounds=0)
        session_id = await federation.sessions.start(config)
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    try:
        federation.seed(MODEL)
        session = federation.store.session(federation.run(run()))
        rounds = federation.store.rounds(session.id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FAILED
    assert "round 1 failed: only 1 of the 2 clients" in session.reason
    assert [r.status for r in rounds] == [RoundStatus.FAILED]


async def _until(condition, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_a_stopped_session_ends_after_the_round_in_flight(tmp_path):
    federation = _federation(tmp_path, [H, H])

    async def run() -> str:
        session_id = await federation.sessions.start(_config(rounds=50, min_clients=2))
        await _until(lambda: len(federation.store.rounds(session_id)) >= 1)
        await federation.sessions.stop(session_id, by="alice")
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    try:
        federation.seed(MODEL)
        session = federation.store.session(federation.run(run()))
        rounds = federation.store.rounds(session.id)
    finally:
        federation.close()
    assert session.status == SessionStatus.STOPPED
    assert session.reason == f"stopped by alice after round {session.rounds_done}"
    assert 1 <= session.rounds_done < 50 and len(rounds) == session.rounds_done
    assert all(r.status == RoundStatus.FINISHED for r in rounds)


def test_a_cancelled_session_ends_now_and_leaves_nothing_behind(tmp_path):
    federation = _federation(tmp_path, [H, Behaviour.SILENT])

    async def run() -> str:
        config = SessionConfig(rounds=3, min_clients=2, round_timeout=60.0)
        session_id = await federation.sessions.start(config)
        await _until(lambda: bool(list((tmp_path / "combiner-0" / "models").glob("*"))))
        await asyncio.sleep(0.1)  # the honest client's update is collected meanwhile
        await federation.sessions.cancel(session_id, by="bob")
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    try:
        federation.seed(MODEL)
        session = federation.store.session(federation.run(run()))
    finally:
        federation.close()
    assert session.status == SessionStatus.CANCELLED and session.reason == "cancelled by bob"
    assert session.rounds_done == 0 and federation.store.rounds(session.id) == []
    assert _staging_is_empty(federation)
    assert not list((tmp_path / "combiner-0" / "updates").glob("*"))


def test_only_the_running_session_can_be_stopped(tmp_path):
    federation = _federation(tmp_path, [H])

    async def run() -> str:
        session_id = await federation.sessions.start(_config(rounds=1, min_clients=1))
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    try:
        federation.seed(MODEL)
        finished = federation.run(run())
        with pytest.raises(NotFoundError):
            federation.run(federation.sessions.stop("nope", by="alice"))
        with pytest.raises(RoundFailed, match="is not running; nothing to stop"):
            federation.run(federation.sessions.cancel(finished, by="alice"))
    finally:
        federation.close()


def test_an_upload_of_another_layout_is_a_seed_only_when_named(tmp_path):
    from stratafl.errors import ConfigError

    federation = _federation(tmp_path, [H])

    async def one_session(seed_model_id: str | None = None) -> str:
        config = _config(rounds=1, min_clients=1, seed_model_id=seed_model_id)
        session_id = await federation.sessions.start(config)
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    async def scenario() -> list[str]:
        first = await one_session()  # the trail now has a trained model
        other = federation.seed({"v": np.zeros(3, np.float32)})
        with pytest.raises(ConfigError, match="name it as seed_model_id"):
            await federation.sessions.start(_config(rounds=1))
        named = await one_session(other)
        again = federation.seed({"v": np.ones(3, np.float32)})  # the trail's newest layout
        third = await one_session()
        assert federation.store.session(third).seed_model_id == again
        return [first, named, third]

    try:
        federation.seed(MODEL)
        sessions = [federation.store.session(s) for s in federation.run(scenario())]
    finally:
        federation.close()
    assert [s.status for s in sessions] == ["finished"] * 3, [s.reason for s in sessions]
    assert sessions[1].seed_model_id != sessions[0].seed_model_id
