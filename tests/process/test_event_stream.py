"""Server-Sent Events over real loopback HTTP: a session's stored events replayed after
Last-Event-ID, new ones delivered live from the feed (no polling), keepalives, the stream
closed after the session's end event, a bound on open streams (503), a slow subscriber
dropped; `follow()` reconnecting with Last-Event-ID and stopping at the end; and a real
session's progress events, live, from a federation of processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from stratafl import errors
from stratafl.controller.events import EventFeed
from stratafl.controller.rest import stream as rest_stream
from stratafl.records import SESSION_END_KINDS, EventRecord, RoundProgress
from stratafl.restapi import ControllerClient
from stratafl.restapi.events import EventFollower, read_events
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus


@pytest.fixture
def loopback_max_streams() -> int:
    """A bound of 3 open streams on `served`, so the tests can reach it."""
    return 3


def _wait_for(condition, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _messages(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Each SSE message as its fields; comments (keepalives) as {"comment": ...}."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line == "":
            if fields:
                yield fields
            fields = {}
        else:
            name, _, value = line.partition(": ")
            fields[name] = value


def _session_events(store, session_id: str) -> list[EventRecord]:
    store.create_session(session_id, {"rounds": 2}, "m0")
    add = store.add_event
    return [
        add("session_started", "controller", "start", session_id=session_id),
        add("combiner_registered", "k0", "not this session's"),
        add("round_started", "controller", "r1", session_id=session_id, round=1),
        add("round_finished", "controller", "r1", session_id=session_id, round=1),
    ]


def test_a_sessions_events_replay_after_last_event_id_then_arrive_live(served):
    store = served.controller.store
    started, _, round_started, round_finished = _session_events(store, "s1")
    url = f"{served.url}/api/v1/sessions/s1/events/stream"
    headers = {"Last-Event-ID": str(started.id)}
    received: list[dict[str, str]] = []
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for fields in _messages(response):
            received.append(fields)
            if len(received) == 2:  # the replay is done: the rest comes live
                store.add_event("round_started", "controller", "r2", session_id="s1", round=2)
                store.add_event("model_pruned", "controller", "no session")
                store.update_session("s1", status=SessionStatus.FINISHED, finished_at=time.time())
                store.add_event("session_finished", "controller", "end", session_id="s1")
                store.add_event("round_started", "controller", "after the end", session_id="s1")
    # the stream closed by itself after the end event
    assert [m["event"] for m in received] == [
        "round_started",
        "round_finished",
        "round_started",
        "session_finished",
    ]
    assert [int(m["id"]) for m in received[:2]] == [round_started.id, round_finished.id]
    records = [EventRecord.model_validate_json(m["data"]) for m in received]
    assert [r.id for r in records] == [int(m["id"]) for m in received]
    assert records[0] == round_started and all(r.session_id == "s1" for r in records)
    # ?after= does what the header does; a finished session's stream replays and closes
    with httpx.stream("GET", url, params={"after": round_finished.id}, timeout=30) as response:
        assert [m["event"] for m in _messages(response)] == ["round_started", "session_finished"]


def test_the_all_events_stream_keeps_alive_and_sends_everything(served, monkeypatch):
    monkeypatch.setattr(rest_stream, "KEEPALIVE_SECONDS", 0.05)
    store = served.controller.store
    first = store.add_event("combiner_registered", "k0", "before")
    seen: list[dict[str, str]] = []
    url = f"{served.url}/api/v1/events/stream"
    with httpx.stream("GET", url, params={"after": 0}, timeout=30) as response:
        for fields in _messages(response):
            seen.append(fields)
            if fields.get("comment") == "keepalive" and seen.count(fields) == 1:
                store.add_event("session_started", "controller", "live", session_id="s9")
            if fields.get("event") == "session_started":
                break  # this stream never ends by itself
    events = [m for m in seen if "event" in m]
    assert [m["event"] for m in events] == ["combiner_registered", "session_started"]
    assert int(events[0]["id"]) == first.id
    assert {"comment": "keepalive"} in seen


def test_bad_event_ids_and_unknown_sessions_are_refused(served):
    served.controller.store.create_session("s1", {"rounds": 1}, "m0")
    bad = httpx.get(f"{served.url}/api/v1/sessions/s1/events/stream", params={"after": "x1"})
    assert bad.status_code == 400 and "is not an event id" in bad.json()["detail"]
    for bad_id in ("-3", "²", str(2**64)):  # not an id, a digit int() refuses, over int64
        header = httpx.get(
            f"{served.url}/api/v1/events/stream",
            headers={"Last-Event-ID": bad_id.encode()},
            timeout=10,
        )
        assert header.status_code == 400, bad_id
    unknown = httpx.get(f"{served.url}/api/v1/sessions/nope/events/stream")
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFoundError"


def test_open_streams_are_bounded_and_a_closed_one_frees_its_place(served):
    feed = served.controller.events
    url = f"{served.url}/api/v1/events/stream"
    with httpx.Client(timeout=30) as http:
        opened = [http.stream("GET", url) for _ in range(3)]
        responses = [stream.__enter__() for stream in opened]
        assert [r.status_code for r in responses] == [200, 200, 200]
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 503
        body = refused.json()
        assert body["error"] == "UnavailableError"
        assert "close one, or read GET /api/v1/events pages instead" in body["detail"]
        opened[0].__exit__(None, None, None)
        _wait_for(lambda: feed.open_streams() == 2, "the closed stream to leave the feed")
        with http.stream("GET", url) as again:
            assert again.status_code == 200
        for stream in opened[1:]:
            stream.__exit__(None, None, None)
    _wait_for(lambda: feed.open_streams() == 0, "every stream to leave the feed")


def test_a_subscriber_that_falls_behind_is_dropped_not_buffered():
    feed = EventFeed(max_streams=2, queue_events=3)

    async def main() -> tuple[bool, EventRecord | None, int]:
        sub = feed.subscribe(None)
        for i in range(1, 6):  # from another thread, as a worker's events are
            event = EventRecord(id=i, time=0.0, kind="k", source="s", message="m")
            await asyncio.to_thread(feed.publish, event)
        await asyncio.sleep(0)  # the hand-overs run on this loop
        dropped, after = sub.dropped, await sub.next(1.0)
        feed.unsubscribe(sub)
        return dropped, after, feed.open_streams()

    assert asyncio.run(main()) == (True, None, 0)


def _sse(*events: EventRecord) -> bytes:
    return "".join(rest_stream.message(e) + ": keepalive\n\n" for e in events).encode()


def _event(i: int, kind: str = "round_finished") -> EventRecord:
    return EventRecord(id=i, time=float(i), kind=kind, source="c", message="m", session_id="s1")


def test_follow_reconnects_with_last_event_id_and_stops_at_the_end():
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # dropped after two events, before the end
            return httpx.Response(200, content=_sse(_event(3), _event(5)))
        if len(asked) == 2:
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, content=_sse(_event(7), _event(8, "session_failed"), _event(9)))

    with httpx.Client(base_url="http://c/api/v1", transport=httpx.MockTransport(handler)) as http:
        follower = EventFollower(
            http,
            "http://c",
            "/sessions/s1/events/stream",
            ends=lambda e: e.kind in SESSION_END_KINDS,
            ended=lambda: False,
            backoff=0.0,
        )
        ids = [event.id for event in follower.follow(after=2)]
    assert ids == [3, 5, 7, 8]  # nothing after the end event
    assert asked == ["2", "5", "5"]


def test_follow_gives_up_after_bounded_reconnections_and_names_the_fix():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with httpx.Client(base_url="http://c/api/v1", transport=httpx.MockTransport(handler)) as http:
        follower = EventFollower(
            http,
            "http://c",
            "/events/stream",
            ends=lambda e: False,
            ended=lambda: False,
            reconnects=2,
            backoff=0.0,
        )
        with pytest.raises(errors.UnavailableError, match="follow again with after=4"):
            list(follower.follow(after=4))


def test_an_event_a_newer_controller_sends_is_named_not_a_traceback():
    lines = iter(['data: {"id": "x"}', ""])
    with pytest.raises(errors.StrataError, match="same stratafl version"):
        list(read_events(lines))


def test_follow_over_loopback_stops_after_the_sessions_end(served):
    store = served.controller.store
    _session_events(store, "s1")

    def finish() -> None:
        store.update_session("s1", status=SessionStatus.STOPPED, finished_at=time.time())
        store.add_event("session_stopped", "controller", "end", session_id="s1", reason="by admin")

    with ControllerClient(served.url) as api:
        kinds = []
        for event in api.follow("s1"):
            kinds.append(event.kind)
            if event.kind == "round_finished":
                threading.Thread(target=finish).start()
        assert kinds == ["session_started", "round_started", "round_finished", "session_stopped"]
        # a session that ended before its events had a session id: follow ends too
        store.create_session("old", {"rounds": 1}, "m0")
        store.update_session("old", status=SessionStatus.FAILED, finished_at=time.time() - 3600)
        assert list(api.follow("old")) == []
        with pytest.raises(errors.NotFoundError):
            api.follow("nope")


@pytest.mark.slow
def test_a_real_sessions_progress_arrives_live(federation):
    with federation(clients=2, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        session = fed.client.start_session(SessionConfig(rounds=2, min_clients=2))
        events = list(fed.client.follow(session.id))
        assert fed.client.session(session.id).status == "finished"
        stored = fed.client.events(session_id=session.id)
    kinds = [e.kind for e in events]
    assert kinds == [
        "session_started",
        "round_started",
        "round_finished",
        "round_started",
        "round_finished",
        "session_finished",
    ]
    assert events == stored  # what was streamed is what was stored, in order
    started = events[1].data
    assert started["round"] == 1 and started["clients_selected"] == 2
    for number, event in zip((1, 2), (events[2], events[4]), strict=True):
        progress = RoundProgress.model_validate(event.data)
        assert progress.round == number and progress.status == "finished"
        assert progress.model_out and progress.outcomes == {"ok": 2}
        assert progress.client_accuracy is not None and progress.accuracy is not None
        assert progress.client_accuracy.worst <= progress.client_accuracy.mean
        assert progress.bytes.clients_up > 0 and progress.bytes.combiners_up > 0
        assert {"train", "reduce", "store", "total"} <= set(progress.timings)
    assert json.loads(events[-1].model_dump_json())["data"]["reason"] == ""
