"""SCAFFOLD's control variates (and FedDyn's h) in the controller (in one event loop,
tests/support/inprocess.py): the session starts from a copy of its seed with c = 0, c is in every
model of the trail, the server optimiser steps the model and leaves c the merged value, and
c survives a restart.

The in-process clients add (index + 1) to every tensor, control variates included, with
10 * (index + 1) examples: two clients move every tensor by 5/3 per round under FedAvg.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stratafl.aggregate.feddyn import state_name
from stratafl.aggregate.scaffold import control_name
from stratafl.controller.recovery import recover
from stratafl.records import RoundRecord
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus
from tests.support.inprocess import Behaviour, InProcessFederation, stored_params

H = Behaviour.HONEST
MODEL = {"w": np.zeros(6, np.float32), "n": np.zeros(2, np.int64)}
C = control_name("w")


class Crash(BaseException):
    """Stands for kill -9: no handler of the session loop catches it."""


def _federation(workdir: Path) -> InProcessFederation:
    workdir.mkdir(parents=True, exist_ok=True)
    federation = InProcessFederation(workdir)
    for index in range(2):  # one client on each of two combiners
        federation.add_client(federation.add_combiner(f"combiner-{index}"), index, H)
    return federation


def _config(**changes: object) -> SessionConfig:
    return SessionConfig(round_timeout=1.0, wait_for_clients_seconds=0.0, min_clients=2, **changes)


def _run(federation: InProcessFederation, config: SessionConfig) -> str:
    async def run() -> str:
        session_id = await federation.sessions.start(config)
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    return federation.run(run())


def test_a_scaffold_session_starts_from_zero_control_variates_kept_in_the_trail(tmp_path):
    federation = _federation(tmp_path)
    try:
        seed = federation.seed(MODEL)
        config = _config(rounds=2, drift_correction="scaffold")
        session = federation.store.session(_run(federation, config))
        trail = federation.store.trail(session.final_model_id)
        start = stored_params(federation.models, trail[-2].id)
        final = stored_params(federation.models, session.final_model_id)
        events = [e.kind for e in federation.store.events()]
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert [m.round for m in trail] == [2, 1, 0, None] and trail[-1].id == seed
    assert session.seed_model_id == seed and trail[-2].session_id == session.id
    assert list(start) == ["w", "n", C] and not start[C].any()
    assert "start_model_made" in events
    np.testing.assert_allclose(final["w"], 10 / 3, rtol=1e-6)
    np.testing.assert_allclose(final[C], 10 / 3, rtol=1e-6)  # FedAvg of c, as of w


def test_the_server_optimiser_steps_the_model_and_c_takes_the_merged_value(tmp_path):
    """FedAvgM (lr 1, momentum 0.5) moves w by 5/3, then 0.5 * 5/3 + 5/3 = 2.5; c moves by
    the merged 5/3 each round: SCAFFOLD's c+ = c + f * mean(delta c_i), no momentum."""
    federation = _federation(tmp_path)
    try:
        federation.seed(MODEL)
        config = _config(
            rounds=2, drift_correction="scaffold", aggregator="fedavgm:server_lr=1.0,momentum=0.5"
        )
        session = federation.store.session(_run(federation, config))
        final = stored_params(federation.models, session.final_model_id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    np.testing.assert_allclose(final["w"], 5 / 3 + 2.5, rtol=1e-6)
    np.testing.assert_allclose(final[C], 10 / 3, rtol=1e-6)
    np.testing.assert_array_equal(final["n"], 2)  # integers: the merged value, 5/3 cast to 1


def test_a_session_without_scaffold_from_a_model_with_c_starts_without_it(tmp_path):
    federation = _federation(tmp_path)
    try:
        federation.seed({**MODEL, C: np.ones(6, np.float32)})
        session = federation.store.session(_run(federation, _config(rounds=1)))
        final = stored_params(federation.models, session.final_model_id)
        rounds = [m.round for m in federation.store.trail(session.final_model_id)]
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert list(final) == ["w", "n"] and rounds == [1, 0, None]


def test_a_scaffold_session_from_a_model_with_c_goes_on_from_that_c(tmp_path):
    federation = _federation(tmp_path)
    try:
        seed = federation.seed({**MODEL, C: np.ones(6, np.float32)})
        config = _config(rounds=1, drift_correction="scaffold")
        session = federation.store.session(_run(federation, config))
        final = stored_params(federation.models, session.final_model_id)
        trail = federation.store.trail(session.final_model_id)
    finally:
        federation.close()
    assert [m.id for m in trail][1:] == [seed]  # no copy: the seed has its c
    np.testing.assert_allclose(final[C], 1 + 5 / 3, rtol=1e-6)


def test_a_feddyn_session_from_a_model_with_c_starts_from_zero_h_without_c(tmp_path):
    federation = _federation(tmp_path)
    try:
        federation.seed({**MODEL, C: np.ones(6, np.float32)})
        config = _config(rounds=1, drift_correction="feddyn")
        session = federation.store.session(_run(federation, config))
        trail = federation.store.trail(session.final_model_id)
        start = stored_params(federation.models, trail[-2].id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert list(start) == ["w", "n", state_name("w")] and not start[state_name("w")].any()


@pytest.mark.parametrize("crash_at", [1, 2])
def test_c_survives_a_controller_crash(tmp_path, crash_at):
    """A crash before round 1 or 2 is recorded: the resumed session goes on from the start
    copy (no second copy is made) or from round 1's model, and ends where an uninterrupted
    session ends."""
    config = _config(rounds=3, drift_correction="scaffold")
    first = _federation(tmp_path / "crashed")
    finish_round = first.store.finish_round

    def crashing(record: RoundRecord, **progress: Any) -> None:
        if record.number == crash_at:
            raise Crash
        finish_round(record, **progress)

    first.store.finish_round = crashing  # type: ignore[method-assign]

    async def until_the_crash() -> None:
        await first.sessions.start(config)
        assert first.sessions.current is not None
        with pytest.raises(Crash):
            await first.sessions.current

    try:
        first.seed(MODEL)
        first.run(until_the_crash())
    finally:
        first.close()
    second = _federation(tmp_path / "crashed")

    async def restart() -> str | None:
        resumed = recover(second.store, second.trail, second.sessions)
        assert second.sessions.current is not None
        await second.sessions.current
        return resumed

    try:
        session_id = second.run(restart())
        session = second.store.session(str(session_id))
        final = stored_params(second.models, session.final_model_id)
        starts = [m for m in second.store.models(session.id) if m.round == 0]
    finally:
        second.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert len(starts) == 1
    np.testing.assert_allclose(final["w"], 5.0, rtol=1e-6)
    np.testing.assert_allclose(final[C], 5.0, rtol=1e-6)
