"""The combiner folds updates as they arrive: its memory is O(model), not O(clients x model).

20 clients send updates of a 50 MB model to one combiner process; its peak resident memory
(VmHWM, read from /proc) must stay far below the 1 GB that holding every update would take.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stratafl.client.app import ClientContext
from stratafl.client.runtime import ClientRuntime
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig
from tests.support.federation_apps import ShiftApp
from tests.support.marks import HEAVY

pytestmark = [pytest.mark.slow, HEAVY]

CLIENTS = 20
PARAMS = 12_500_000  # float32: 50 MB
MODEL_MB = PARAMS * 4 / 1e6
TRANSFER_BUFFERS_MB = 150


def _rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024 * 1.048576
    raise AssertionError(f"no {field} in /proc status")


def test_combiner_memory_is_bounded_by_the_model_not_the_clients(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_PARAMS", str(PARAMS))
    spec = FederationSpec(app="(in-process clients)", clients=0, combiners=1, workdir=tmp_path)
    with LocalFederation(spec) as federation:
        federation.client.upload_model(ShiftApp(ClientContext()).initial_params(0))
        runtimes = [
            ClientRuntime(
                f"c{i}",
                federation.url,
                ShiftApp(ClientContext(f"c{i}", i, CLIENTS)),
                credentials=federation.credentials(f"c{i}"),
            )
            for i in range(CLIENTS)
        ]
        threads = [threading.Thread(target=r.run, daemon=True) for r in runtimes]
        for thread in threads:
            thread.start()
        try:
            federation.wait_for_clients(CLIENTS)
            combiner = next(t for t in federation.group.tiers if t.name == "combiner-0")
            idle = _rss_mb(combiner.process.pid, "VmRSS")  # the interpreter, TLS, imports
            config = SessionConfig(rounds=1, min_clients=CLIENTS, validate_each_round=False)
            session, rounds = federation.run_session(config)
        finally:
            for runtime in runtimes:
                runtime.stop()
        assert session.status == "finished", session.reason
        assert len(rounds[0].participants) == CLIENTS
        peak = _rss_mb(combiner.process.pid)
    all_updates_mb = CLIENTS * MODEL_MB
    print(
        f"combiner peak RSS {peak:.0f} MB ({idle:.0f} MB idle) for {CLIENTS} updates of "
        f"{MODEL_MB:.0f} MB"
    )
    # Over the idle process: the float64 running sum (2x model), one staged update mapped
    # (1x) and the partial (1x), plus the transfer buffers, which do not grow with the model
    # (4 slots x a few 4 MB chunks in flight, and the heap glibc keeps after them: measured
    # 50-100 MB). Holding every update would be 20x the model.
    assert peak - idle < 4 * MODEL_MB + TRANSFER_BUFFERS_MB
    assert peak < 6 * MODEL_MB + 150
    assert peak < all_updates_mb / 2
