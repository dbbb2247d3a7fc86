"""The state store off the event loop: `OffLoop` keeps the order of writes and runs every
call in a worker thread, and the guard of ``conftest.py`` fails a handler that calls the
store on its loop (shown here by putting such a call back on purpose)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from stratafl.controller.discovery import Discovery
from stratafl.controller.rest.app import create_api
from stratafl.controller.servicer import ControllerServicer
from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import ClientStatus
from stratafl.store.models import ModelStore
from stratafl.store.offloop import OffLoop
from stratafl.store.state import StateStore
from tests.support.asgi import SyncASGI
from tests.support.controllers import open_controller
from tests.support.loopguard import StoreCallOnLoop, public_methods


def _on_the_loop(self: OffLoop, call: Any, /, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
    """`OffLoop.read`/`write` as they must not be: the call runs here, on the loop."""
    answer = asyncio.get_running_loop().create_future()
    answer.set_result(call(*args, **kwargs))
    return answer


@pytest.fixture
def store(tmp_path):
    state = StateStore(f"sqlite:///{tmp_path / 'state.db'}").open()
    yield state
    state.close()


def test_writes_land_in_the_order_they_were_submitted_on_one_thread():
    off_loop = OffLoop(readers=3)
    landed: list[tuple[int, int]] = []

    def write(n: int) -> None:
        landed.append((n, threading.get_ident()))

    async def scenario() -> None:
        await asyncio.gather(*reversed([off_loop.write(write, n) for n in range(200)]))

    asyncio.run(scenario())
    off_loop.close()
    assert [n for n, _ in landed] == list(range(200))
    assert len({thread for _, thread in landed}) == 1
    assert threading.get_ident() not in {thread for _, thread in landed}


def test_reads_run_in_worker_threads_and_closing_lets_it_start_again():
    off_loop = OffLoop(readers=2)

    async def where() -> int:
        return await off_loop.read(threading.get_ident)

    first = asyncio.run(where())
    off_loop.close()
    second = asyncio.run(where())
    off_loop.close()
    assert threading.get_ident() not in {first, second}
    with pytest.raises(ValueError, match="readers must be at least 1"):
        OffLoop(readers=0)


def test_the_guard_wraps_every_public_method_of_the_store():
    assert {"combiner_heartbeat", "clients_page", "add_event", "events_after"} <= set(
        public_methods()
    )


def test_a_heartbeat_is_recorded_off_the_loop_by_the_time_it_is_answered(store):
    discovery = Discovery(store)
    servicer = ControllerServicer(discovery, ModelStore("memory://off-loop"))

    async def scenario() -> pb.HeartbeatReply:
        await servicer.RegisterCombiner(pb.CombinerInfo(combiner_id="a", address="h:1"), None)
        await discovery.assign("c0")  # a combiner's heartbeat records only its own clients
        await discovery.assign("c1")
        request = pb.CombinerHeartbeat(combiner_id="a", client_ids=["c0", "c1"])
        return await servicer.Heartbeat(request, None)

    assert asyncio.run(scenario()).ok
    assert {(c.id, c.status) for c in store.clients()} == {
        ("c0", ClientStatus.CONNECTED),
        ("c1", ClientStatus.CONNECTED),
    }


def test_a_grpc_handler_calling_the_store_on_its_loop_fails(store, monkeypatch):
    monkeypatch.setattr(OffLoop, "write", _on_the_loop)
    servicer = ControllerServicer(Discovery(store), ModelStore("memory://off-loop"))
    info = pb.CombinerInfo(combiner_id="a", address="h:1")
    with pytest.raises(StoreCallOnLoop, match=r"StateStore\.register_combiner ran on the event"):
        asyncio.run(servicer.RegisterCombiner(info, None))


def test_a_rest_handler_calling_the_store_on_its_loop_fails(tmp_path, monkeypatch, caplog):
    """The app answers an unexpected error with a 500 and logs it: the guard's error."""
    with open_controller(tmp_path) as controller:
        api = SyncASGI(create_api(controller))
        try:
            assert api.get("/api/v1/combiners").status_code == 200  # through off_loop: fine
            monkeypatch.setattr(OffLoop, "read", _on_the_loop)
            assert api.get("/api/v1/combiners").status_code == 500
            assert "StateStore.combiners_page ran on the event loop" in caplog.text
            assert "controller/rest/federation.py" in caplog.text
        finally:
            api.close()


def test_the_guard_judges_a_session_start_as_part_of_the_rest_handler_that_asked(
    tmp_path, monkeypatch, caplog
):
    """The session runner's start is judged as part of the handler that called it."""
    with open_controller(tmp_path) as controller:
        api = SyncASGI(create_api(controller))
        try:
            monkeypatch.setattr(OffLoop, "write", _on_the_loop)
            assert api.post("/api/v1/sessions", json={"rounds": 1}).status_code == 500
            assert "ran on the event loop of the handler" in caplog.text
            assert "controller/rest/sessions.py" in caplog.text
        finally:
            api.close()
