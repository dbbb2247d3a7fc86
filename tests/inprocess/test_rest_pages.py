"""Every list endpoint answers pages with cursors, over real loopback HTTP: oldest first,
each record once, a bad cursor a 400 naming the fix, and a page's size bounded by its
limit however large the history (1,000 clients x many rounds)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest

from stratafl import errors
from stratafl.records import (
    ClientOutcome,
    PromiseRecord,
    RoundRecord,
    Traffic,
    Validation,
)
from stratafl.restapi import ControllerClient, walk
from stratafl.security import Role
from stratafl.status import ClientStatus, OutcomeStatus, RoundStatus
from tests.support.loopback import LoopbackAPI


@pytest.fixture
def api(served) -> Iterator[ControllerClient]:
    with ControllerClient(served.url) as client:  # --insecure: no token needed
        yield client


def _round(session_id: str, number: int, clients: int, status=RoundStatus.FINISHED) -> RoundRecord:
    ids = [f"client-{i:04d}" for i in range(clients)]
    return RoundRecord(
        session_id=session_id,
        number=number,
        status=status,
        model_in=f"m{number - 1}",
        model_out=f"m{number}" if status == RoundStatus.FINISHED else None,
        started_at=float(number),
        duration=1.5,
        participants=ids,
        outcomes=[
            ClientOutcome(
                client_id=c,
                combiner_id="k0",
                status=OutcomeStatus.OK,
                num_examples=600,
                metrics={"loss": 0.5, "accuracy": 0.8},
                bytes_up=400_000,
                bytes_down=400_000,
                seconds=1.0,
            )
            for c in ids
        ],
        validation=Validation(
            clients=clients,
            per_client={c: {"accuracy": 0.8, "loss": 0.5} for c in ids},
            accuracy=0.8,
            loss=0.5,
        ),
        traffic=Traffic(clients_up=clients * 400_000, clients_down=clients * 400_000),
        timings={"train": 1.0, "reduce": 0.2, "total": 1.5},
    )


def test_every_list_pages_oldest_first_and_each_record_comes_once(served, api):
    store = served.controller.store
    for i in range(7):
        store.create_session(f"s{i}", {"rounds": 3}, "m0")
        store.set_client(f"c{i}", "k0", ClientStatus.CONNECTED)
        store.register_combiner(f"k{i}", f"127.0.0.1:{7000 + i}", 10)
        store.add_event("kind", "test", f"event {i}", session_id="s1" if i % 2 else None)
        parent = f"m{i - 1}" if i else None
        store.add_model(
            f"m{i}",
            parent_id=parent,
            session_id="s1",
            round_number=i,
            size_bytes=1,
            num_parameters=1,
        )
    for number in (1, 1, 2, 3):  # a failed round 1, then its retry
        store.finish_round(_round("s1", number, 2), final_model_id=None)

    def pages(fetch) -> list[list[str]]:
        """The ids of each page, pages of 3, following next until it is null."""
        seen, after = [], None
        while True:
            page = fetch(after, 3)
            seen.append([getattr(r, "id", None) or getattr(r, "number", None) for r in page.items])
            if page.next is None:
                return seen
            assert len(page.items) == 3
            after = page.next

    assert pages(api.sessions_page) == [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6"]]
    assert pages(api.clients_page) == [["c0", "c1", "c2"], ["c3", "c4", "c5"], ["c6"]]
    assert pages(api.combiners_page)[-1] == ["k6"]
    assert pages(lambda a, n: api.models_page(None, a, n))[0] == ["m0", "m1", "m2"]
    assert pages(lambda a, n: api.trail_page("m6", a, n)) == [
        ["m6", "m5", "m4"],
        ["m3", "m2", "m1"],
        ["m0"],
    ]
    assert pages(lambda a, n: api.rounds_page("s1", a, n)) == [[1, 1, 2], [3]]
    events = [e.message for e in api.iter_events()]
    assert events == [f"event {i}" for i in range(7)]
    assert [e.message for e in api.iter_events("s1")] == ["event 1", "event 3", "event 5"]
    # a record added after a page was read comes on a later page, never twice
    first = api.sessions_page(limit=6)
    store.create_session("s7", {"rounds": 3}, "m0")
    assert [s.id for s in api.sessions_page(first.next).items] == ["s6", "s7"]
    # the list methods walk the pages; limit means "at most"
    assert [s.id for s in api.sessions(limit=4)] == ["s0", "s1", "s2", "s3"]
    assert len(api.sessions()) == 8 and len(api.models(session_id="s1")) == 7
    assert [m.id for m in api.trail("m6", limit=2)] == ["m6", "m5"]


def test_tokens_page_too(tmp_path):
    server = LoopbackAPI(tmp_path, secure=True)
    try:
        trust = server.controller.trust
        assert trust is not None
        admin, _ = trust.issue(
            server.controller.store, name="admin", subject="admin", role=Role.ADMIN, ttl_seconds=60
        )
        for i in range(4):
            trust.issue(
                server.controller.store,
                name=f"t{i}",
                subject=f"t{i}",
                role=Role.CLIENT,
                ttl_seconds=60,
            )
        with ControllerClient(server.url, token=admin) as api:
            first = api.tokens_page(limit=2)
            rest = list(walk(lambda a, n: api.tokens_page(a, n), None))
        assert [t.name for t in first.items] == ["admin", "t0"] and first.next is not None
        assert [t.name for t in rest] == ["admin", "t0", "t1", "t2", "t3"]
    finally:
        server.close()


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "nope",
        "W10",  # base64 of []
        "WyJjbGllbnRzIiwiYzEiXQ",  # a cursor of the clients list
        "WyJzZXNzaW9ucyIsInRlbiIsInMxIl0",  # ["sessions","ten","s1"]: a string for a time
        "x" * 400,
        _cursor('["sessions",NaN,"s1"]'),  # well formed, but nothing a database compares
        _cursor('["sessions",1000000000000000000000000000000,"s1"]'),
    ],
)
def test_a_bad_cursor_is_a_400_naming_the_fix(served, cursor):
    served.controller.store.create_session("s0", {"rounds": 1}, "m0")
    response = httpx.get(f"{served.url}/api/v1/sessions", params={"after": cursor})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "StrataError"
    assert "pass the `next` of the previous page of sessions unchanged" in body["detail"]
    too_long = httpx.get(f"{served.url}/api/v1/sessions", params={"after": "x" * 600})
    assert too_long.status_code == 422 and too_long.json()["detail"].startswith("query.after")


def test_a_cursor_of_another_models_trail_is_refused(served, api):
    store = served.controller.store
    for i in range(3):
        parent = f"m{i - 1}" if i else None
        store.add_model(
            f"m{i}",
            parent_id=parent,
            session_id=None,
            round_number=None,
            size_bytes=1,
            num_parameters=1,
        )
    cursor = api.trail_page("m2", limit=1).next
    assert cursor is not None
    with pytest.raises(errors.StrataError, match="not a cursor of the trail of m1"):
        api.trail_page("m1", after=cursor)


def test_a_page_of_rounds_is_bounded_by_its_limit_and_its_outcomes_not_the_history(served):
    """1,000 clients x 30 rounds is ~12 MB of rounds; a page of 5 holds 5 of them, and a
    page of the default limit stops at 10,000 outcomes: 10 rounds."""
    store = served.controller.store
    store.create_session("big", {"rounds": 30}, "m0")
    for number in range(1, 31):
        store.finish_round(_round("big", number, 1000), final_model_id=None)
    one = httpx.get(f"{served.url}/api/v1/sessions/big/rounds", params={"limit": 1}, timeout=60)
    five = httpx.get(f"{served.url}/api/v1/sessions/big/rounds", params={"limit": 5}, timeout=60)
    default = httpx.get(f"{served.url}/api/v1/sessions/big/rounds", timeout=60)
    assert [len(r.json()["items"]) for r in (one, five, default)] == [1, 5, 10]
    assert five.json()["next"] is not None and default.json()["next"] is not None
    per_round = len(one.content)
    assert per_round > 100_000  # each round carries its 1,000 outcomes
    assert len(five.content) < 5 * per_round + 1000  # the page grows with its limit only
    assert len(default.content) < 10 * per_round + 1000  # and with 10,000 outcomes at most
    with ControllerClient(served.url) as api:
        assert [r.number for r in api.rounds("big")] == list(range(1, 31))  # 3 pages
    too_many = httpx.get(f"{served.url}/api/v1/sessions/big/rounds", params={"limit": 1001})
    assert too_many.status_code == 422


def test_the_promise_is_stored_with_its_session(served, api):
    served.controller.store.create_session("s0", {"rounds": 1}, "m0")
    promise = PromiseRecord(
        epochs_budget=3,
        centralized_accuracy=0.88,
        federated_accuracy=0.85,
        client_alone_best=0.71,
        client_alone_mean=0.62,
    )
    assert api.record_promise("s0", promise).promise == promise
    assert api.session("s0").promise == promise
    assert api.sessions()[0].promise == promise
    bad = httpx.put(
        f"{served.url}/api/v1/sessions/s0/promise",
        json=promise.model_dump() | {"federated_accuracy": 1.5},
    )
    assert bad.status_code == 422 and "federated_accuracy" in bad.json()["detail"]
    missing = httpx.put(f"{served.url}/api/v1/sessions/nope/promise", json=promise.model_dump())
    assert missing.status_code == 404


def test_the_store_pages_the_same_on_every_backend(store):
    """Keys with float times round-trip exactly through the cursor on both databases."""
    for i in range(5):
        store.create_session(f"s{i}", {}, "m0")
        store.add_event("kind", "test", f"e{i}", session_id="s0")
    seen, after = [], None
    while True:
        page = store.sessions_page(after, 2)
        seen += [s.id for s in page.items]
        if page.next is None:
            break
        after = page.next
    assert seen == ["s0", "s1", "s2", "s3", "s4"]
    events = store.events_page("s0", None, 3)
    assert [e.message for e in events.items] == ["e0", "e1", "e2"]
    rest = store.events_page("s0", events.next, 3)
    assert [e.message for e in rest.items] == ["e3", "e4"] and rest.next is None
    assert [e.message for e in store.events_after(events.items[-1].id, "s0")] == ["e3", "e4"]
    with pytest.raises(errors.StrataError, match="is not a cursor of rounds"):
        store.rounds_page("s0", after=page.next or events.next)


def test_a_page_of_rounds_ends_before_its_outcomes_pass_the_budget_on_every_backend(store):
    """Rounds of 3, 4, 5, 20 and 1 outcomes, 8 a page: [3, 4], [5], [20] (a round over the
    budget is a page of its own), [1]; rows are streamed, on SQLite and PostgreSQL alike."""
    store.create_session("s0", {}, "m0")
    for number, clients in enumerate((3, 4, 5, 20, 1), start=1):
        store.finish_round(_round("s0", number, clients), final_model_id=None)
    seen, after = [], None
    while True:
        page = store.rounds_page("s0", after, limit=100, max_outcomes=8)
        seen.append([len(r.outcomes) for r in page.items])
        if page.next is None:
            break
        after = page.next
    assert seen == [[3, 4], [5], [20], [1]]
    assert [len(r.outcomes) for r in store.rounds_page("s0", limit=2).items] == [3, 4]
