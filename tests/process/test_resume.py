"""kill -9 of the controller in the middle of a session: it resumes and loses nothing.

Real processes on loopback. The restarted controller (same ports, same work folder)
resumes the session from its last recorded round with the optimiser state saved beside
that model; combiners re-register by themselves and their clients stay with them. The
session must end exactly where an uninterrupted one does, which FedAvgM's momentum makes
a sharp check: a momentum restarted from zero would land far off.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.params import Params
from stratafl.settings import SessionConfig
from tests.support.paths import TEST_APP

pytestmark = pytest.mark.slow

CONFIG = SessionConfig(
    rounds=6,
    min_clients=2,
    round_timeout=60,
    aggregator="fedavgm:server_lr=1.0,momentum=0.9",
)


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")


def _uninterrupted(tmp_path) -> Params:
    spec = FederationSpec(app=TEST_APP, clients=2, combiners=1, workdir=tmp_path / "fresh")
    with LocalFederation(spec) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        session, _ = fed.run_session(CONFIG)
        assert session.status == "finished", session.reason
        assert session.final_model_id is not None
        return fed.client.download_params(session.final_model_id)


def test_a_session_killed_mid_round_resumes_and_ends_as_if_never_stopped(
    federation, tmp_path, monkeypatch
):
    monkeypatch.setenv("STRATA_TEST_TRAIN_SECONDS", "0.5")  # a round is in flight for a while
    with federation(clients=2, combiners=1) as fed:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(2)
        session = fed.client.start_session(CONFIG)
        _wait_for(lambda: fed.client.session(session.id).rounds_done >= 2, 60, "round 2")
        fed.restart_controller()  # kill -9 while round 3 (or so) trains
        _wait_for(
            lambda: fed.client.session(session.id).status != "running", 120, "the session's end"
        )
        session = fed.client.session(session.id)
        rounds = fed.client.rounds(session.id)
        assert session.final_model_id is not None
        trail = fed.client.trail(session.final_model_id)
        final = fed.client.download_params(session.final_model_id)
        resumed = [e.data["round"] for e in fed.client.events() if e.kind == "session_resumed"]

    assert session.status == "finished" and session.rounds_done == 6, session.reason
    finished = Counter(r.number for r in rounds if r.status == "finished")
    assert finished == Counter(range(1, 7)), [(r.number, r.status, r.reason) for r in rounds]
    assert len(resumed) == 1 and 3 <= resumed[0] <= 6  # it resumed mid-session
    # the trail: 6 rounds' models and the seed, each the parent of the next, no gap
    assert [m.round for m in trail] == [6, 5, 4, 3, 2, 1, None] and trail[-1].id == seed.id
    assert [m.parent_id for m in trail[:-1]] == [m.id for m in trail[1:]]
    finished_rounds = sorted((r for r in rounds if r.status == "finished"), key=lambda r: r.number)
    assert [r.model_out for r in finished_rounds] == [m.id for m in reversed(trail[:-1])]

    expected = _uninterrupted(tmp_path)
    for name, array in expected.items():
        np.testing.assert_array_max_ulp(final[name], array, maxulp=4)
