"""`strata session watch`: a line per closed round and the session's end line, or each
event as a line of JSON; exit code 0 for a finished or stopped session, 1 for a failed or
cancelled one. Against the real REST app on loopback, and a real federation of processes."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from stratafl import errors
from stratafl.cli.main import app
from stratafl.cli.session_watch import HEADER
from stratafl.records import (
    ClientOutcome,
    RoundProgress,
    RoundRecord,
    Traffic,
    Validation,
)
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, SessionStatus
from tests.support.strata import invoke_strata


def _round(number: int, status: RoundStatus) -> RoundRecord:
    return RoundRecord(
        session_id="s1",
        number=number,
        status=status,
        reason="" if status == RoundStatus.FINISHED else "only 1 of 2 clients returned",
        model_in="m0",
        model_out="m1" if status == RoundStatus.FINISHED else None,
        started_at=1.0,
        duration=2.5,
        outcomes=[ClientOutcome(client_id="c0", status=OutcomeStatus.OK)],
        validation=Validation(
            clients=2,
            per_client={"c0": {"accuracy": 0.9}, "c1": {"accuracy": 0.6}},
            accuracy=0.75,
            loss=0.4,
        ),
        traffic=Traffic(clients_up=1_000_000, clients_down=2_000_000, combiners_up=500_000),
    )


def _record_session(store, end: SessionStatus) -> None:
    store.create_session("s1", {"rounds": 2}, "m0")
    store.add_event("session_started", "controller", "s1", session_id="s1")
    for number, status in ((1, RoundStatus.FAILED), (1, RoundStatus.FINISHED)):
        store.add_event(
            "round_started", "controller", "r", session_id="s1", round=number, clients_selected=2
        )
        progress = RoundProgress.of(_round(number, status)).model_dump(mode="json")
        store.add_event(f"round_{status}", "controller", "r", session_id="s1", **progress)
    store.update_session("s1", status=end, finished_at=time.time())
    store.add_event(f"session_{end}", "controller", "s1", session_id="s1", reason=f"{end} by ada")


@pytest.mark.parametrize(
    ("end", "code"),
    [
        (SessionStatus.FINISHED, 0),
        (SessionStatus.STOPPED, 0),
        (SessionStatus.CANCELLED, 1),
        (SessionStatus.FAILED, 1),
    ],
)
def test_watch_prints_a_line_per_round_and_exits_with_the_sessions_end(served, end, code):
    _record_session(served.controller.store, end)
    status, out = invoke_strata({"STRATA_CONTROLLER": served.url}, "session", "watch", "s1")
    assert status == code, out
    lines = out.splitlines()
    assert HEADER in lines
    rows = [line.split() for line in lines if line.strip().startswith("1 ")]
    # round, status, accuracy, loss, worst client, seconds, MB moved
    assert rows == [
        ["1", "failed", "0.7500", "0.4000", "0.6000", "2.50", "3.50"],
        ["1", "finished", "0.7500", "0.4000", "0.6000", "2.50", "3.50"],
    ]
    assert lines[-1] == f"session s1 {end}: {end} by ada"


def test_watch_as_json_prints_each_event_on_one_line(served):
    _record_session(served.controller.store, SessionStatus.FINISHED)
    status, out = invoke_strata(
        {"STRATA_CONTROLLER": served.url}, "session", "watch", "s1", "--format", "json"
    )
    assert status == 0, out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["kind"] for e in events] == [
        "session_started",
        "round_started",
        "round_failed",
        "round_started",
        "round_finished",
        "session_finished",
    ]
    assert events[4]["data"]["client_accuracy"]["worst"] == 0.6
    # from a later event on: the ones after it only
    status, out = invoke_strata(
        {"STRATA_CONTROLLER": served.url},
        "session",
        "watch",
        "s1",
        "--after",
        str(events[3]["id"]),
        "--format",
        "json",
    )
    assert [json.loads(line)["kind"] for line in out.splitlines()] == [
        "round_finished",
        "session_finished",
    ]


def test_watching_an_unknown_session_is_an_error_naming_the_fix(served):
    result = CliRunner().invoke(
        app, ["session", "watch", "nope"], env={"STRATA_CONTROLLER": served.url}
    )
    assert isinstance(result.exception, errors.NotFoundError)
    assert "list them with `strata session list`" in str(result.exception)


@pytest.mark.slow
def test_watch_follows_a_real_session_to_its_end(federation):
    with federation(clients=2, combiners=1) as fed:
        fed.upload_seed_model()
        fed.wait_for_clients(2)
        env = {"STRATA_CONTROLLER": fed.url}
        if fed.admin_token is not None:
            env["STRATA_TOKEN"] = fed.admin_token
        if fed.ca_file is not None:
            env["STRATA_CA_FILE"] = str(fed.ca_file)
        done = fed.client.start_session(SessionConfig(rounds=2, min_clients=2))
        status, out = invoke_strata(env, "session", "watch", done.id)
        assert status == 0, out
        rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
        assert [row[:2] for row in rows] == [["1", "finished"], ["2", "finished"]]
        assert all(float(row[2]) >= 0 and float(row[6]) > 0 for row in rows)  # accuracy, MB
        assert out.splitlines()[-1] == f"session {done.id} finished"
        # two clients cannot make a round that needs three: it fails, and so does watch
        failing = SessionConfig(
            rounds=1, min_clients=3, wait_for_clients_seconds=0, max_failed_rounds=0
        )
        failed = fed.client.start_session(failing)
        status, out = invoke_strata(env, "session", "watch", failed.id, "--format", "json")
        assert status == 1, out
        kinds = [json.loads(line)["kind"] for line in out.splitlines()]
        assert kinds[0] == "session_started" and kinds[-1] == "session_failed"
        assert "round_failed" in kinds
