"""Discovery: least-loaded assignment under max_clients, failed combiners excluded."""

from __future__ import annotations

import asyncio

import pytest

from stratafl.controller.discovery import OFFLINE_AFTER_SECONDS, SEEN_REFRESH_SECONDS, Discovery
from stratafl.controller.tally import split_quota
from stratafl.errors import UnavailableError
from stratafl.settings import SessionConfig
from stratafl.status import ClientStatus, CombinerStatus
from stratafl.store.state import StateStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def discovery(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    clock = Clock()
    d = Discovery(store, clock=clock)
    d.clock = clock  # type: ignore[attr-defined]
    yield d
    store.close()


def test_a_burst_of_clients_spreads_evenly_before_any_connects(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    assigned = [asyncio.run(discovery.assign(f"c{i}")).combiner_id for i in range(6)]
    assert assigned.count("a") == 3 and assigned.count("b") == 3


def test_assignment_respects_max_clients(discovery):
    asyncio.run(discovery.register("small", "127.0.0.1:1", 1))
    asyncio.run(discovery.register("big", "127.0.0.1:2", 100))
    asyncio.run(discovery.client_event("small", "c0", connected=True))
    assert asyncio.run(discovery.assign("c1")).combiner_id == "big"


def test_no_room_anywhere_names_the_fix(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 1))
    asyncio.run(discovery.assign("c0"))
    with pytest.raises(UnavailableError, match="strata combiner start"):
        asyncio.run(discovery.assign("c1"))


def test_a_client_reporting_its_combiner_dead_is_moved_and_the_combiner_is_offline(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    asyncio.run(discovery.client_event("a", "c0", connected=True))
    assert asyncio.run(discovery.assign("c0", failed_combiner="a")).combiner_id == "b"
    assert [e.combiner_id for e in discovery.online()] == ["b"]
    statuses = {row.id: row.status for row in discovery._store.combiners()}
    assert statuses == {"a": CombinerStatus.OFFLINE, "b": CombinerStatus.ONLINE}
    (client,) = discovery._store.clients()
    assert (client.combiner_id, client.status) == ("b", ClientStatus.ASSIGNED)


def test_client_connects_and_disconnects_are_recorded_in_the_store(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.assign("c0"))
    asyncio.run(discovery.client_event("a", "c0", connected=True))
    assert [(c.id, c.combiner_id, c.status) for c in discovery._store.clients()] == [
        ("c0", "a", ClientStatus.CONNECTED)
    ]
    asyncio.run(discovery.client_event("a", "c0", connected=False))
    assert discovery._store.clients()[0].status is ClientStatus.DISCONNECTED
    assert [e.kind for e in discovery._store.events()] == ["combiner_registered"]


def test_combiners_without_heartbeats_go_offline_and_come_back(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.assign("c0"))
    discovery.clock.now += OFFLINE_AFTER_SECONDS + 1
    asyncio.run(discovery.sweep())
    assert discovery.online() == []
    assert asyncio.run(discovery.heartbeat("a", ["c0"])) is True
    assert discovery.connected_clients() == 1
    assert asyncio.run(discovery.heartbeat("unknown", [])) is False


def test_heartbeats_write_only_new_clients_until_the_periodic_refresh(discovery):
    writes: list[tuple[list[str], int | None]] = []
    store = discovery._store
    original = store.combiner_heartbeat

    def recording(combiner_id, client_ids, *, num_clients=None):
        writes.append((list(client_ids), num_clients))
        original(combiner_id, client_ids, num_clients=num_clients)

    store.combiner_heartbeat = recording
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    everyone = [f"c{i}" for i in range(5)]
    for client_id in [*everyone, "c5"]:
        asyncio.run(discovery.assign(client_id))
    asyncio.run(discovery.heartbeat("a", everyone))  # the first heartbeat writes every client
    discovery.clock.now += 1
    asyncio.run(discovery.heartbeat("a", everyone))  # nothing new: no client row is rewritten
    discovery.clock.now += 1
    asyncio.run(discovery.heartbeat("a", [*everyone, "c5"]))  # only the newcomer
    assert writes == [(everyone, 5), ([], 5), (["c5"], 6)]
    assert {c.id for c in store.clients()} == {*everyone, "c5"}
    assert store.combiners()[0].num_clients == 6
    seen = {c.id: c.last_seen for c in store.clients()}
    discovery.clock.now += SEEN_REFRESH_SECONDS
    asyncio.run(discovery.heartbeat("a", [*everyone, "c5"]))  # the refresh rewrites them all
    assert writes[-1] == ([*everyone, "c5"], 6)
    assert all(c.last_seen >= seen[c.id] for c in store.clients())
    restarted = discovery.register("a", "127.0.0.1:1", 10)
    asyncio.run(restarted)  # a restarted combiner: all written again
    discovery.clock.now += 1
    asyncio.run(discovery.heartbeat("a", everyone))
    assert writes[-1] == (everyone, 5)


def test_wait_for_clients_wakes_on_connect_without_polling(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))

    async def scenario() -> int:
        waiter = asyncio.ensure_future(discovery.wait_for_clients(2, timeout=30))
        await asyncio.sleep(0)
        await discovery.assign("c0")
        await discovery.assign("c1")
        await discovery.client_event("a", "c0", connected=True)
        await discovery.client_event("a", "c1", connected=True)
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(scenario()) == 2


@pytest.mark.parametrize(
    ("total", "loads", "expected"),
    [
        (6, {"a": 3, "b": 3}, {"a": 3, "b": 3}),
        (3, {"a": 3, "b": 3}, {"a": 2, "b": 1}),
        (5, {"a": 1, "b": 9}, {"a": 1, "b": 4}),
        (4, {"a": 0, "b": 2}, {"a": 0, "b": 2}),
        (0, {"a": 3}, {"a": 0}),
    ],
)
def test_split_quota_is_proportional_and_capped(total, loads, expected):
    assert split_quota(total, loads) == expected


@pytest.mark.parametrize(
    ("per_round", "min_clients", "connected", "wanted"),
    [(1.0, 1, 10, 10), (0.3, 1, 10, 3), (0.01, 2, 10, 2), (4, 1, 10, 4), (40, 1, 10, 10)],
)
def test_clients_wanted_reads_fractions_and_counts(per_round, min_clients, connected, wanted):
    config = SessionConfig(clients_per_round=per_round, min_clients=min_clients)
    assert config.clients_wanted(connected) == wanted


def test_fractional_counts_are_refused():
    with pytest.raises(ValueError, match="whole count"):
        SessionConfig(clients_per_round=2.5)


def test_a_hint_from_a_client_that_was_never_on_that_combiner_takes_nothing_down(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    asyncio.run(discovery.client_event("b", "stranger", connected=True))
    assert asyncio.run(discovery.assign("stranger", failed_combiner="a")).combiner_id == "b"
    assert sorted(e.combiner_id for e in discovery.online()) == ["a", "b"]


def test_each_client_counts_once_and_a_restart_forgets_stale_hints(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    asyncio.run(discovery.client_event("a", "c0", connected=True))
    asyncio.run(discovery.assign("c0", failed_combiner="a"))
    assert [e.combiner_id for e in discovery.online()] == ["b"]
    asyncio.run(discovery.register("a", "127.0.0.1:3", 10))  # a new process under the same id
    # c0's old hint names the id, not the new process: it is not counted again
    assert asyncio.run(discovery.assign("c0", failed_combiner="a")).combiner_id == "b"
    assert sorted(e.combiner_id for e in discovery.online()) == ["a", "b"]


def test_an_address_belongs_to_its_combiner_while_it_is_offline_and_after_a_restart(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    assert asyncio.run(discovery.owner_of("127.0.0.1:1")) == "a"
    assert asyncio.run(discovery.owner_of("127.0.0.1:9")) is None
    asyncio.run(discovery.mark_offline("a", "no heartbeat"))
    assert asyncio.run(discovery.owner_of("127.0.0.1:1")) == "a"  # offline, still its own
    # a new controller process (same store) knows it from the combiners table
    fresh = Discovery(discovery._store)
    assert asyncio.run(fresh.owner_of("127.0.0.1:1")) == "a"
    asyncio.run(fresh.register("a", "127.0.0.1:2", 10))  # it moved: the old one is free
    assert asyncio.run(fresh.owner_of("127.0.0.1:1")) is None
    assert asyncio.run(fresh.owner_of("127.0.0.1:2")) == "a"


def test_load_is_what_the_controller_assigned_not_what_a_combiner_reports(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    first = [asyncio.run(discovery.assign(f"c{i}")).combiner_id for i in range(4)]
    assert sorted(first) == ["a", "a", "b", "b"]
    on_a = sorted(c for c, to in zip([f"c{i}" for i in range(4)], first, strict=True) if to == "a")
    asyncio.run(discovery.heartbeat("a", []))  # a lies: "I hold nobody"
    asyncio.run(discovery.heartbeat("b", ["c9", *on_a]))  # b claims a's clients and a stranger
    assert discovery.assigned("a") == frozenset(on_a)
    assert discovery.connected_clients() == 0  # nobody is connected where it was assigned
    assert asyncio.run(discovery.assign("c4")).combiner_id == "a"  # a tie, by id: not a's lie
    rows = {c.id: c.combiner_id for c in discovery._store.clients()}
    assert "c9" not in rows and all(rows[c] == "a" for c in on_a)  # b's claim is not recorded


def test_a_combiner_cannot_take_another_combiners_client_by_saying_so(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 10))
    asyncio.run(discovery.register("b", "127.0.0.1:2", 10))
    assert asyncio.run(discovery.assign("c0")).combiner_id == "a"
    asyncio.run(discovery.client_event("a", "c0", connected=True))
    asyncio.run(discovery.client_event("b", "c0", connected=True))
    assert discovery.combiner_of("c0") == "a"
    assert [e.eligible() for e in discovery.online()] == [{"c0"}, set()]


def test_a_restarted_controller_recalls_its_assignments(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    try:
        before = Discovery(store)
        asyncio.run(before.register("a", "127.0.0.1:1", 10))
        asyncio.run(before.register("b", "127.0.0.1:2", 10))
        placed = {f"c{i}": asyncio.run(before.assign(f"c{i}")).combiner_id for i in range(3)}
        after = Discovery(store)  # the same database, a new process
        assert asyncio.run(after.recall_assignments()) == 3
        asyncio.run(after.register("a", "127.0.0.1:1", 10))
        asyncio.run(after.register("b", "127.0.0.1:2", 10))
        for combiner_id in ("a", "b"):
            held = {c for c, to in placed.items() if to == combiner_id}
            assert after.assigned(combiner_id) == held
    finally:
        store.close()


def test_a_client_asking_again_keeps_its_place_on_a_full_combiner(discovery):
    asyncio.run(discovery.register("a", "127.0.0.1:1", 2))
    asyncio.run(discovery.assign("c0"))
    asyncio.run(discovery.assign("c1"))
    assert asyncio.run(discovery.assign("c0")).combiner_id == "a"  # its own place is free
    with pytest.raises(UnavailableError):
        asyncio.run(discovery.assign("c2"))
