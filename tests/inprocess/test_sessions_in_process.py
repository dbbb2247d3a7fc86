"""Sessions that outlive a controller and bad rounds, and the models they keep.

In one event loop (tests/support/inprocess.py): a failed round runs again; a controller that
stops mid-round (simulated by an exception no handler catches, raised where the round
would be recorded) leaves a session that `recover` resumes on the same stores, with a
result equal to an uninterrupted session's; the retention policy prunes files, not rows.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stratafl.controller.recovery import recover
from stratafl.controller.retention import RetentionPolicy
from stratafl.errors import ConfigError, StrataError
from stratafl.observe.watchers import SessionWatcher
from stratafl.records import RoundRecord
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus
from tests.support.inprocess import Behaviour, InProcessFederation, stored_params

H = Behaviour.HONEST
MODEL = {"w": np.zeros((8, 4), np.float32), "b": np.zeros(4, np.float32)}
MOMENTUM = "fedavgm:server_lr=1.0,momentum=0.9"


class Crash(BaseException):
    """Stands for kill -9: no handler of the session loop catches it."""


def _federation(
    workdir: Path, *groups: list[Behaviour], watch: SessionWatcher | None = None
) -> InProcessFederation:
    workdir.mkdir(parents=True, exist_ok=True)
    federation = InProcessFederation(workdir, watch=watch)
    index = 0
    for number, behaviours in enumerate(groups):
        combiner = federation.add_combiner(f"combiner-{number}")
        for behaviour in behaviours:
            federation.add_client(combiner, index, behaviour)
            index += 1
    return federation


def _config(**changes: object) -> SessionConfig:
    return SessionConfig(round_timeout=1.0, wait_for_clients_seconds=0.0, **changes)


def _session(federation: InProcessFederation, config: SessionConfig) -> str:
    async def run() -> str:
        session_id = await federation.sessions.start(config)
        assert federation.sessions.current is not None
        await federation.sessions.current
        return session_id

    return federation.run(run())


def _numbers(rounds: list[RoundRecord]) -> list[tuple[int, str]]:
    return [(r.number, r.status) for r in rounds]


def test_one_session_runs_at_a_time_whoever_starts_it(tmp_path):
    """The rule lives in the runner: a second start (or a resume) while one session runs
    is refused before anything is recorded, and a start after it ended goes ahead."""
    federation = _federation(tmp_path, [H])

    async def run() -> tuple[str, str]:
        first = await federation.sessions.start(_config(rounds=1))
        busy = f"^session {first} is already running .*strata session stop {first} "
        with pytest.raises(StrataError, match=busy):
            await federation.sessions.start(_config(rounds=1))
        with pytest.raises(StrataError, match=busy):
            federation.sessions.resume(federation.store.session(first))
        assert federation.sessions.current is not None
        await federation.sessions.current
        second = await federation.sessions.start(_config(rounds=1))
        assert federation.sessions.current is not None
        await federation.sessions.current
        return first, second

    try:
        federation.seed(MODEL)
        first, second = federation.run(run())
        sessions = federation.store.sessions()
        begun = [e.session_id for e in federation.store.events() if e.kind.startswith("session_")]
    finally:
        federation.close()
    assert [(s.id, s.status) for s in sessions] == [
        (first, SessionStatus.FINISHED),
        (second, SessionStatus.FINISHED),
    ]
    assert begun == [first, first, second, second]  # each started and finished, once


def test_a_round_failed_for_want_of_clients_waits_for_them_and_runs_again(tmp_path):
    federation = _federation(tmp_path, [H], [H])
    federation.combiners[1].dead = True
    waits: list[int] = []

    async def wait_for_clients(count: int, timeout: float) -> int:
        waits.append(count)
        if len(waits) == 2:  # the combiner is back while the re-run waits for clients
            federation.combiners[1].dead = False
            federation.offline.clear()
        return 2

    federation.wait_for_clients = wait_for_clients  # type: ignore[method-assign]
    try:
        federation.seed(MODEL)
        session = federation.store.session(_session(federation, _config(rounds=2, min_clients=2)))
        rounds = federation.store.rounds(session.id)
        trail = federation.store.trail(session.final_model_id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert _numbers(rounds) == [(1, "failed"), (1, "finished"), (2, "finished")]
    assert session.rounds_done == 2 and len(trail) == 3 and len(waits) == 3


def test_a_session_gives_up_after_more_than_max_failed_rounds(tmp_path):
    federation = _federation(tmp_path, [H, Behaviour.SILENT])
    try:
        federation.seed(MODEL)
        config = _config(rounds=3, min_clients=2, max_failed_rounds=2)
        session = federation.store.session(_session(federation, config))
        rounds = federation.store.rounds(session.id)
    finally:
        federation.close()
    assert session.status == SessionStatus.FAILED and session.rounds_done == 0
    assert _numbers(rounds) == [(1, "failed")] * 3
    assert session.reason.startswith("round 1 failed: only 1 of the 2 clients")
    assert session.reason.endswith("(3 failed rounds; max_failed_rounds is 2)")


class _Ends:
    """A session watcher that keeps every end it is told of."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, SessionStatus, str]] = []

    def round_recorded(self, record: RoundRecord) -> None:
        pass

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        self.ended.append((session_id, status, reason))


def test_a_failed_session_ends_as_every_session_does(tmp_path):
    """The row, the watchers and the end event (whose message is the reason), each once."""
    ends = _Ends()
    federation = _federation(tmp_path, [H, Behaviour.SILENT], watch=ends)
    try:
        federation.seed(MODEL)
        failing = _config(rounds=1, min_clients=2, max_failed_rounds=0)
        failed = federation.store.session(_session(federation, failing))
        events = [e for e in federation.store.events() if e.kind.startswith("session_")]
    finally:
        federation.close()
    assert failed.status == SessionStatus.FAILED and failed.finished_at is not None
    assert failed.reason.startswith("round 1 failed: only 1 of the 2 clients")
    assert ends.ended == [(failed.id, SessionStatus.FAILED, failed.reason)]
    assert [(e.kind, e.session_id, e.message, e.data.get("reason")) for e in events] == [
        ("session_started", failed.id, f"session {failed.id}", None),
        ("session_failed", failed.id, failed.reason, failed.reason),
    ]


def _crash_when_recording(federation: InProcessFederation, number: int) -> None:
    """Stop the controller after round ``number`` listed its model, before it is recorded."""
    finish_round = federation.store.finish_round

    def crashing(record: RoundRecord, **progress: Any) -> None:
        if record.number == number:
            raise Crash
        finish_round(record, **progress)

    federation.store.finish_round = crashing  # type: ignore[method-assign]


def _uninterrupted(workdir: Path, config: SessionConfig) -> dict[str, np.ndarray]:
    federation = _federation(workdir, [H, H], [H])
    try:
        federation.seed(MODEL)
        session = federation.store.session(_session(federation, config))
        assert session.status == SessionStatus.FINISHED, session.reason
        return stored_params(federation.models, session.final_model_id)
    finally:
        federation.close()


def test_a_session_resumes_after_a_crash_from_its_last_recorded_round(tmp_path):
    workdir = tmp_path / "crashed"
    config = _config(rounds=5, min_clients=3, aggregator=MOMENTUM)
    first = _federation(workdir, [H, H], [H])
    _crash_when_recording(first, 3)

    async def until_the_crash() -> str:
        session_id = await first.sessions.start(config)
        assert first.sessions.current is not None
        with pytest.raises(Crash):
            await first.sessions.current
        return session_id

    try:
        seed = first.seed(MODEL)
        session_id = first.run(until_the_crash())
        (orphan,) = [m.id for m in first.store.models(session_id) if m.round == 3]
    finally:
        first.close()
    leftovers = [
        workdir / "staging" / "x.safetensors",
        workdir / "models" / "y.safetensors.partial",
    ]
    for path in leftovers:  # what a kill -9 may leave half-written
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")

    second = _federation(workdir, [H, H], [H])  # the same stores, a new controller

    async def restart() -> str | None:
        resumed = recover(second.store, second.trail, second.sessions)
        assert second.sessions.current is not None
        await second.sessions.current
        return resumed

    try:
        crashed = second.store.session(session_id)
        assert (crashed.status, crashed.rounds_done) == (SessionStatus.RUNNING, 2)
        assert second.run(restart()) == session_id
        session = second.store.session(session_id)
        rounds = second.store.rounds(session_id)
        trail = second.store.trail(session.final_model_id)
        events = [e for e in second.store.events() if e.kind == "session_resumed"]
        final = stored_params(second.models, session.final_model_id)
        listed = {m.id for m in second.store.models()}
    finally:
        second.close()
    assert session.status == SessionStatus.FINISHED, session.reason
    assert _numbers(rounds) == [(n, "finished") for n in range(1, 6)]
    assert [m.round for m in trail] == [5, 4, 3, 2, 1, None] and trail[-1].id == seed
    assert [r.model_in for r in rounds[1:]] == [r.model_out for r in rounds[:-1]]
    assert orphan not in listed and not second.models.exists(orphan)
    assert not second.models.exists(f"{orphan}-optimizer")
    assert [e.data["round"] for e in events] == [3]
    assert not any(path.exists() for path in leftovers)
    expected = _uninterrupted(tmp_path / "uninterrupted", config)
    for name in MODEL:  # momentum resumed from its saved state, not from zero
        np.testing.assert_array_equal(final[name], expected[name])


def test_of_several_sessions_left_running_the_newest_resumes_and_the_others_fail(tmp_path):
    federation = _federation(tmp_path, [H])
    seed = federation.seed(MODEL)
    config = _config(rounds=1).model_dump()
    federation.store.create_session("older", config, seed)
    time.sleep(0.01)
    federation.store.create_session("newer", config, seed)

    async def restart() -> str | None:
        resumed = recover(federation.store, federation.trail, federation.sessions)
        assert federation.sessions.current is not None
        await federation.sessions.current
        return resumed

    try:
        assert federation.run(restart()) == "newer"
        older, newer = federation.store.session("older"), federation.store.session("newer")
    finally:
        federation.close()
    assert newer.status == SessionStatus.FINISHED and newer.rounds_done == 1
    assert older.status == SessionStatus.FAILED
    assert "several sessions were left running; only the newest, newer" in older.reason


def test_a_session_whose_config_cannot_be_read_fails_at_restart_with_the_reason(tmp_path):
    federation = _federation(tmp_path, [H])
    try:
        seed = federation.seed(MODEL)
        federation.store.create_session("old", {"rounds": 3, "retired_setting": 1}, seed)
        assert recover(federation.store, federation.trail, federation.sessions) is None
        session = federation.store.session("old")
    finally:
        federation.close()
    assert session.status == SessionStatus.FAILED
    assert "could not be resumed after a restart" in session.reason
    assert "retired_setting" in session.reason


def test_retention_deletes_files_and_keeps_rows_seeds_finals_and_every_nth(tmp_path):
    federation = _federation(tmp_path, [H])
    federation.trail.retention = RetentionPolicy(keep_last=2, keep_every=3)
    prune = federation.trail.prune
    pruned_rounds: list[list[int | None]] = []  # after each round, and when a session ends

    def recording_prune() -> list[str]:
        pruned = prune()
        pruned_rounds.append([federation.store.model(m).round for m in pruned])
        return pruned

    federation.trail.prune = recording_prune  # type: ignore[method-assign]

    async def two_sessions() -> list[str]:
        ids = []
        for config in (_config(rounds=7, aggregator=MOMENTUM), _config(rounds=5)):
            ids.append(await federation.sessions.start(config))  # the second from the first's end
            assert federation.sessions.current is not None
            await federation.sessions.current
        return ids

    try:
        upload = federation.seed(MODEL)
        first, second = map(federation.store.session, federation.run(two_sessions()))
        models = {m.id: m for m in federation.store.models()}
        trail = federation.store.trail(second.final_model_id)
        pruned = next(m.id for m in models.values() if m.pruned_at is not None)
        with pytest.raises(ConfigError, match="was pruned: the retention policy keeps the last 2"):
            federation.run(federation.sessions.start(_config(seed_model_id=pruned)))
    finally:
        federation.close()
    # a session keeps its last 2, running or ended, and its best (every round scores the
    # same here, so round 1, the first to reach it); every 3rd round stays
    assert pruned_rounds == [[], [], [], [2], [], [4], [5], []] + [[], [], [], [2], [], []]
    assert (first.best_model_id, second.best_model_id) == (trail[11].id, trail[4].id)
    kept = {m.id for m in models.values() if m.pruned_at is None}
    assert sorted(
        (m.session_id == first.id, m.round or 0) for m in models.values() if m.id in kept
    ) == [
        (False, 0),  # the upload, first's seed
        (False, 1),  # second's best
        (False, 3),
        (False, 4),
        (False, 5),  # second's end
        (True, 1),  # first's best
        (True, 3),
        (True, 6),
        (True, 7),  # first's end, second's seed
    ]
    assert upload in kept and second.seed_model_id == first.final_model_id
    assert [m.round for m in trail] == [5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, None]  # no gap
    for model_id, model in models.items():
        assert federation.models.exists(model_id) == (model_id in kept)
        if model.session_id == first.id:  # fedavgm saved its state beside each model
            assert federation.models.exists(f"{model_id}-optimizer") == (model_id in kept)
