"""The controller's line per round, in text and as JSON, and tiers that log as they are
told through STRATA_LOG_LEVEL / STRATA_LOG_FORMAT."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from stratafl.logs import FORMAT_ENV, LEVEL_ENV, configure_logging
from stratafl.observe.watchers import RoundLog
from stratafl.records import ClientOutcome, RoundRecord, Traffic, Validation
from stratafl.status import OutcomeStatus, RoundStatus, SessionStatus


@pytest.fixture
def restored_logging(monkeypatch):
    """configure_logging changes the root logger and the environment: undo both."""
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    monkeypatch.delenv(FORMAT_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _record(status: RoundStatus = RoundStatus.FINISHED, reason: str = "") -> RoundRecord:
    ok = OutcomeStatus.OK
    return RoundRecord(
        session_id="abc123",
        number=3,
        status=status,
        reason=reason,
        model_in="m",
        started_at=0.0,
        duration=2.5,
        participants=["c1", "c2"],
        outcomes=[ClientOutcome(client_id=c, status=ok) for c in ("c1", "c2")],
        validation=Validation.model_validate({"clients": 2, "accuracy": 0.75, "loss": 0.5}),
        traffic=Traffic(clients_up=1_000_000, clients_down=2_000_000, combiners_up=500_000),
    )


def test_a_round_is_one_json_object_per_line_with_its_numbers(restored_logging, capsys):
    configure_logging("info", "json")
    watcher = RoundLog()
    watcher.round_recorded(_record())
    watcher.round_recorded(_record(RoundStatus.FAILED, "only 0 of 2 clients\nreturned"))
    watcher.session_ended("abc123", SessionStatus.FINISHED, "")
    lines = capsys.readouterr().err.splitlines()
    objects = [json.loads(line) for line in lines]  # every line parses on its own
    assert len(objects) == 3
    first, failed, ended = objects
    assert first["level"] == "info" and first["logger"] == "stratafl.controller.rounds"
    assert {k: first[k] for k in ("session", "round", "status", "clients")} == {
        "session": "abc123",
        "round": 3,
        "status": "finished",
        "clients": 2,
    }
    assert (first["accuracy"], first["loss"], first["seconds"]) == (0.75, 0.5, 2.5)
    assert first["mb_moved"] == 3.5
    assert first["message"] == (
        "session abc123 round 3 finished: 2 clients, accuracy 0.7500, loss 0.5000, "
        "2.50 s, 3.5 MB moved"
    )
    assert failed["status"] == "failed" and "only 0 of 2 clients" in failed["message"]
    assert (ended["session"], ended["status"]) == ("abc123", "finished")


def test_the_text_format_is_one_line_per_round(restored_logging, capsys):
    configure_logging("info", "text")
    RoundLog().round_recorded(_record())
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "stratafl.controller.rounds INFO session abc123 round 3 finished: 2 clients, "
        "accuracy 0.7500, loss 0.5000, 2.50 s, 3.5 MB moved"
    )


@pytest.mark.slow
def test_a_tier_process_logs_as_the_environment_says():
    env = {**os.environ, LEVEL_ENV: "info", FORMAT_ENV: "json"}
    done = subprocess.run(
        [sys.executable, "-m", "stratafl.launch.tier", "controller", '{"no_such_option": 1}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines[-1]["level"] == "error"
    assert "controller stopped" in lines[-1]["message"]
    assert "no_such_option" in lines[-1]["message"]
