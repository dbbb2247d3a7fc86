"""The client runtime runs the client protocol on an event loop of its own: several may
run in threads of one process, and `stop` ends each from any thread."""

from __future__ import annotations

import threading

from stratafl.client.app import ClientContext
from stratafl.client.runtime import ClientRuntime
from tests.support.swarm_apps import PullApp


def _unreachable(client_id: str) -> ClientRuntime:
    # port 1 on loopback refuses: the runtime keeps asking, backing off, until stopped
    return ClientRuntime(client_id, "http://127.0.0.1:1", PullApp(ClientContext()))


def test_stop_ends_runtimes_running_in_threads_of_one_process() -> None:
    runtimes = [_unreachable(f"c{i}") for i in range(3)]
    threads = [threading.Thread(target=r.run, daemon=True) for r in runtimes]
    for thread in threads:
        thread.start()
    for runtime in runtimes:  # each has asked at least once: its loop is running
        for _ in range(3000):
            if runtime.counters.assign_errors:
                break
            threading.Event().wait(0.01)
        assert runtime.counters.assign_errors > 0
    for runtime in runtimes:
        runtime.stop()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)


def test_a_runtime_stopped_before_it_runs_does_not_start() -> None:
    runtime = _unreachable("c0")
    runtime.stop()
    runtime.run()  # returns at once: stopped
    assert runtime.counters.assign_errors == 0
