"""Quorum close: once a round's quorum of tasks answered, the rest get a grace, not the
whole timeout; the count each combiner receives; the models a combiner may fetch."""

from __future__ import annotations

import asyncio

import pytest

from stratafl.combiner.rounds import CLOSED_AT_QUORUM, RoundState, wait_for_quorum
from stratafl.controller.link import RoundTask, round_spec
from stratafl.controller.sent_models import SentModels
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security.receipts import ReceiptKeys
from stratafl.settings import RoundSettings, SessionConfig, quorum_count
from stratafl.status import OutcomeStatus, TaskKind


def _state(quorum: int, tasks: int, timeout: float = 60.0) -> RoundState:
    spec = pb.RoundSpec(kind=pb.VALIDATE, quorum=quorum, timeout_seconds=timeout)
    state = RoundState(spec, RoundSettings(), [], None)
    for i in range(tasks):
        state.add_task(f"t{i}", f"c{i}")
    return state


def _close(state: RoundState, at_quorum: bool) -> dict[str, tuple[OutcomeStatus, str]]:
    state.close(CLOSED_AT_QUORUM if at_quorum else "")
    return {o.client_id: (o.status, o.reason) for o in state.outcomes.values()}


def test_a_silent_client_costs_the_grace_not_the_timeout():
    async def play():
        state = _state(quorum=2, tasks=3, timeout=3600)
        state.resolve("t0", OutcomeStatus.OK)
        state.resolve("t1", OutcomeStatus.FAILED)  # any outcome counts towards the quorum
        return state, await wait_for_quorum(state, 3600, grace_floor=0.01)

    state, at_quorum = asyncio.run(play())
    assert at_quorum
    outcomes = _close(state, at_quorum)
    assert outcomes["c2"] == (OutcomeStatus.TIMEOUT, CLOSED_AT_QUORUM)
    assert outcomes["c0"][0] == OutcomeStatus.OK


def test_a_straggler_that_answers_within_the_grace_still_counts():
    async def play():
        state = _state(quorum=2, tasks=3)

        async def straggler():
            await state.quorum_met.wait()  # answers after the quorum, within the grace
            state.resolve("t2", OutcomeStatus.OK)

        late = asyncio.ensure_future(straggler())
        state.resolve("t0", OutcomeStatus.OK)
        state.resolve("t1", OutcomeStatus.OK)
        at_quorum = await wait_for_quorum(state, 60, grace_floor=60)
        await late
        return state, at_quorum

    state, at_quorum = asyncio.run(play())
    assert not at_quorum
    assert all(s == OutcomeStatus.OK for s, _ in _close(state, at_quorum).values())


@pytest.mark.parametrize("quorum", [0, 3, 5])
def test_without_a_quorum_below_the_tasks_the_round_waits_for_all_or_its_timeout(quorum):
    async def play():
        state = _state(quorum=quorum, tasks=3, timeout=0.05)
        state.resolve("t0", OutcomeStatus.OK)
        state.resolve("t1", OutcomeStatus.OK)
        return state, await wait_for_quorum(state, 0.05, grace_floor=0.0)

    state, at_quorum = asyncio.run(play())
    assert not at_quorum
    assert _close(state, at_quorum)["c2"] == (OutcomeStatus.TIMEOUT, "no answer within 0.05 s")


def test_a_quorum_not_met_by_the_timeout_closes_as_a_timeout():
    async def play():
        state = _state(quorum=2, tasks=3, timeout=0.05)
        state.resolve("t0", OutcomeStatus.OK)
        return await wait_for_quorum(state, 0.05, grace_floor=0.0)

    assert asyncio.run(play()) is False


@pytest.mark.parametrize(
    ("fraction", "selected", "count"),
    [(0.8, 5, 4), (0.8, 3, 3), (0.7, 10, 7), (1.0, 10, 0), (0.8, 0, 0), (0.01, 5, 1)],
)
def test_the_quorum_is_a_whole_share_of_the_selected_clients(fraction, selected, count):
    assert quorum_count(fraction, selected) == count
    assert SessionConfig(quorum=fraction).quorum_of(selected) == count


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_a_quorum_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="quorum"):
        SessionConfig(quorum=bad)


def test_each_combiner_gets_the_quorum_of_the_clients_selected_on_it():
    task = RoundTask("s", 1, TaskKind.VALIDATE, "m", 60.0, quorum=0.5)
    keys = ReceiptKeys.generate()
    assert round_spec(task, [f"c{i}" for i in range(6)], keys).quorum == 3
    assert round_spec(task, [f"c{i}" for i in range(9)], keys).quorum == 5
    assert round_spec(task, [], keys).quorum == 0  # nobody selected: nothing to wait for
    everyone = RoundTask("s", 1, TaskKind.TRAIN, "m", 60.0)  # quorum 1.0: wait for all
    assert round_spec(everyone, [f"c{i}" for i in range(10)], keys).quorum == 0


def test_a_combiner_may_fetch_only_the_models_of_its_recent_rounds():
    sent = SentModels(keep=2)
    sent.record("a", "m1")
    assert sent.was_sent("a", "m1") and not sent.was_sent("b", "m1")
    sent.record("a", "m2")
    sent.record("a", "m1")  # again: the newest
    sent.record("a", "m3")
    assert sent.was_sent("a", "m1") and sent.was_sent("a", "m3")
    assert not sent.was_sent("a", "m2")
