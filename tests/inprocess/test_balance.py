"""The rebalancing decision (a pure function), the rebalancer's step over discovery, and
the jittered backoff every reconnect loop waits with."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection, Sequence

import pytest

from stratafl.controller.balance import Rebalancer, even_shares, plan_moves
from stratafl.controller.discovery import Discovery
from stratafl.errors import ConfigError, UnavailableError
from stratafl.store.state import StateStore
from stratafl.transport.backoff import Backoff

# -- the decision ------------------------------------------------------------------------


def _holdings(**counts: int) -> dict[str, set[str]]:
    return {c: {f"{c}-client-{i:02d}" for i in range(n)} for c, n in counts.items()}


@pytest.mark.parametrize(
    ("counts", "capacity", "expected"),
    [
        ({"a": 6, "b": 0}, {"a": 10, "b": 10}, {"a": 3, "b": 3}),
        ({"a": 4, "b": 3, "c": 3}, {"a": 9, "b": 9, "c": 9}, {"a": 4, "b": 3, "c": 3}),
        ({"a": 5, "b": 3, "c": 2}, {"a": 9, "b": 9, "c": 9}, {"a": 4, "b": 3, "c": 3}),
        ({"a": 9, "b": 0}, {"a": 10, "b": 2}, {"a": 7, "b": 2}),
        ({"a": 0, "b": 0}, {"a": 10, "b": 10}, {"a": 0, "b": 0}),
        ({"a": 5, "b": 0}, {"a": 3, "b": 0}, {"a": 3, "b": 0}),  # over every capacity
    ],
)
def test_even_shares_fill_evenly_under_each_capacity(counts, capacity, expected):
    assert even_shares(counts, capacity) == expected


def test_a_combiner_that_comes_back_empty_gets_half_the_clients():
    moves = plan_moves(_holdings(a=6, b=0), {"a": 10, "b": 10})
    assert list(moves) == ["a"] and len(moves["a"]) == 3
    assert set(moves["a"]) <= _holdings(a=6)["a"]


def test_a_spread_within_one_of_even_moves_nobody():
    assert plan_moves(_holdings(a=4, b=3, c=3), {"a": 9, "b": 9, "c": 9}) == {}
    assert plan_moves(_holdings(a=1, b=0), {"a": 9, "b": 9}) == {}
    assert plan_moves({}, {}) == {}


def test_moves_go_only_where_there_is_room():
    # b can take 2 more, c none: a lets exactly 2 go, although it holds far more than b
    moves = plan_moves(_holdings(a=8, b=0, c=2), {"a": 10, "b": 2, "c": 2})
    assert {c: len(ids) for c, ids in moves.items()} == {"a": 2}


def test_several_over_loaded_combiners_each_let_their_surplus_go():
    moves = plan_moves(_holdings(a=5, b=5, c=0, d=0), {c: 10 for c in "abcd"})
    assert {c: len(ids) for c, ids in moves.items()} == {"a": 2, "b": 2}


def test_the_plan_is_reproducible_and_never_names_a_client_twice():
    holdings = _holdings(a=7, b=6, c=0)
    first = plan_moves(holdings, {"a": 10, "b": 10, "c": 10})
    assert first == plan_moves(holdings, {"a": 10, "b": 10, "c": 10})
    named = [c for ids in first.values() for c in ids]
    assert len(named) == len(set(named)) == 4


# -- the rebalancer over discovery ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCombiners:
    """Moves clients as a combiner would: only connected, idle ones; each moved client
    then asks discovery for a combiner and connects where it is sent."""

    def __init__(self, discovery: Discovery, busy: Collection[str] = ()) -> None:
        self.discovery = discovery
        self.busy = set(busy)
        self.asked: list[tuple[str, list[str]]] = []
        self.reconnect = True
        self.down: set[str] = set()
        self.landing: set[asyncio.Future[None]] = set()

    async def move_clients(self, combiner_id: str, client_ids: Sequence[str]) -> list[str]:
        self.asked.append((combiner_id, list(client_ids)))
        if combiner_id in self.down:
            raise UnavailableError(f"combiner {combiner_id} failed (move clients: UNAVAILABLE)")
        moved = [c for c in client_ids if c not in self.busy]
        if self.reconnect:  # they land later, after this answer
            self.landing.add(asyncio.ensure_future(self._land(combiner_id, moved)))
        return moved

    async def _land(self, donor: str, moved: list[str]) -> None:
        for client_id in moved:
            await self.discovery.client_event(donor, client_id, connected=False)
            target = await self.discovery.assign(client_id)
            await self.discovery.client_event(target.combiner_id, client_id, connected=True)


@pytest.fixture
def discovery(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    clock = Clock()
    d = Discovery(store, clock=clock)
    d.clock = clock  # type: ignore[attr-defined]
    yield d
    store.close()


def _connect(discovery: Discovery, combiner_id: str, count: int, first: int = 0) -> None:
    """Clients assigned by discovery (to ``combiner_id``) that then connect there."""
    for i in range(first, first + count):
        assert asyncio.run(discovery.assign(f"c{i}")).combiner_id == combiner_id
        asyncio.run(discovery.client_event(combiner_id, f"c{i}", connected=True))


def _heartbeats(discovery: Discovery) -> None:
    """Every online combiner heartbeats its clients: the rebalancer acts only on combiners
    whose list of clients it has heard since they registered."""
    for entry in discovery.online():
        asyncio.run(discovery.heartbeat(entry.combiner_id, sorted(entry.clients)))


def _loads(discovery: Discovery) -> dict[str, int]:
    return {e.combiner_id: len(e.clients) for e in discovery.online()}


def test_before_a_round_the_load_evens_and_the_moved_clients_have_landed(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    _connect(discovery, "a", 6)
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))  # came back empty
    _heartbeats(discovery)
    combiners = FakeCombiners(discovery)
    balance = Rebalancer(discovery, combiners, clock=discovery.clock)

    async def scenario() -> None:
        await balance.before_round()
        assert _loads(discovery) == {"a": 3, "b": 3}
        assert balance.moved == 3 and balance.in_transit() == set()
        assert await balance.step() == 0  # even now: the next round moves nobody

    asyncio.run(scenario())
    assert len(combiners.asked) == 1
    events = [e for e in discovery._store.events() if e.kind == "clients_moved"]
    assert [e.source for e in events] == ["a"]


def test_a_client_with_a_task_in_flight_stays_and_moves_at_a_later_step(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    _connect(discovery, "a", 4)
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    _heartbeats(discovery)
    combiners = FakeCombiners(discovery, busy={"c2", "c3"})
    balance = Rebalancer(discovery, combiners, clock=discovery.clock)

    async def scenario() -> None:
        assert await balance.step() == 0  # the plan named c2 and c3: both busy
        assert combiners.asked == [("a", ["c2", "c3"])]
        assert _loads(discovery) == {"a": 4, "b": 0}
        combiners.busy.clear()  # their tasks were answered
        await balance.before_round()
        assert _loads(discovery) == {"a": 2, "b": 2}

    asyncio.run(scenario())


def test_nothing_more_moves_while_moved_clients_are_on_their_way(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    _connect(discovery, "a", 6)
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    _heartbeats(discovery)
    combiners = FakeCombiners(discovery)
    combiners.reconnect = False  # the moved clients have not asked for a combiner yet
    balance = Rebalancer(discovery, combiners, settle_seconds=10, clock=discovery.clock)

    async def scenario() -> None:
        assert await balance.step() == 3
        assert _loads(discovery) == {"a": 3, "b": 0}  # they no longer count on a
        # a would look over-loaded against an empty b, but its clients are in transit
        assert await balance.step() == 0

    asyncio.run(scenario())
    assert len(combiners.asked) == 1
    discovery.clock.now += 11  # they never arrived: they count as gone
    assert balance.in_transit() == set()


def test_an_unreachable_combiner_is_skipped_not_fatal(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    _connect(discovery, "a", 4)
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    _heartbeats(discovery)
    combiners = FakeCombiners(discovery)
    combiners.down.add("a")
    balance = Rebalancer(discovery, combiners, clock=discovery.clock)
    assert asyncio.run(balance.step()) == 0
    assert _loads(discovery) == {"a": 4, "b": 0}


def test_nothing_moves_towards_a_combiner_not_heard_from_since_it_registered(discovery):
    # A restarted controller: both combiners register again, and until a combiner's first
    # heartbeat lists its clients it only looks empty.
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    asyncio.run(discovery.heartbeat("b", ["c0", "c1", "c2"]))
    combiners = FakeCombiners(discovery)
    balance = Rebalancer(discovery, combiners, clock=discovery.clock)
    assert asyncio.run(balance.step()) == 0
    asyncio.run(discovery.heartbeat("a", ["c3", "c4", "c5"]))
    assert asyncio.run(balance.step()) == 0  # heard: it was even all along
    assert combiners.asked == []
    discovery.clock.now += 3  # and nothing moves while a combiner has gone quiet
    asyncio.run(discovery.heartbeat("b", ["c0", "c1", "c2", "c6", "c7", "c8"]))
    assert not discovery.settled()


def test_a_late_disconnect_from_the_old_combiner_does_not_undo_the_move(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    assert asyncio.run(discovery.assign("c0")).combiner_id == "a"
    asyncio.run(discovery.client_event("a", "c0", connected=True))
    assert asyncio.run(discovery.assign("c0", preferred="b")).combiner_id == "b"
    asyncio.run(discovery.client_event("b", "c0", connected=True))  # it moved
    asyncio.run(discovery.client_event("a", "c0", connected=False))  # a's event arrives late
    assert discovery.combiner_of("c0") == "b"
    (row,) = discovery._store.clients()
    assert (row.combiner_id, row.status) == ("b", "connected")


# -- the backoff ------------------------------------------------------------------------


def test_backoff_windows_double_up_to_the_cap_and_reset_after_a_success():
    backoff = Backoff(0.1, 2.0, rng=random.Random(0))
    windows = []
    for _ in range(8):
        windows.append(backoff.window())
        backoff.next_delay()
    assert windows == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])
    backoff.reset()
    assert backoff.window() == pytest.approx(0.1)


def test_backoff_waits_are_full_jitter_inside_the_window():
    # 200 clients after the same 5 failures (window: the cap), each with its own randomness
    delays = [
        Backoff(1.0, 4.0, rng=random.Random(seed), failures=5).next_delay() for seed in range(200)
    ]
    assert all(0.0 <= d <= 4.0 for d in delays)
    # spread over the whole window, not stacked at its edge: a fleet does not move in lockstep
    assert min(delays) < 0.5 and max(delays) > 3.5
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_backoff_survives_a_very_long_outage():
    backoff = Backoff(0.2, 5.0, rng=random.Random(2), failures=10_000)
    assert 0.0 <= backoff.next_delay() <= 5.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_a_backoff_that_cannot_grow_is_refused(base, cap):
    with pytest.raises(ConfigError, match="0 < base <= cap"):
        Backoff(base, cap)
