"""`strata session start --settings FILE`: the flags given override the file, and a flag
left out keeps the file's value instead of putting its default back (docs/configuration.md).

The controller is a fake that echoes the settings it was asked to start with, so what is
checked is exactly what the command would send."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stratafl.cli import operator
from stratafl.cli.main import app
from stratafl.records import SessionRecord
from stratafl.settings import SessionConfig
from stratafl.status import SessionStatus


class EchoingController:
    """Answers `start_session` with a record of the settings it was given."""

    def start_session(self, config: SessionConfig) -> SessionRecord:
        return SessionRecord(
            id="s1",
            config=config.model_dump(mode="json"),
            status=SessionStatus.RUNNING,
            seed_model_id=config.seed_model_id or "newest",
            created_at=0.0,
        )


@pytest.fixture(autouse=True)
def _echoing_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def connect(*_: object) -> Iterator[EchoingController]:
        yield EchoingController()

    monkeypatch.setattr(operator, "connect", connect)


def _started(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["session", "start", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    return dict(record["config"]) | {"seed_model_id": record["seed_model_id"]}


def _settings_file(tmp_path: Path, settings: dict[str, object]) -> str:
    path = tmp_path / "session.json"
    path.write_text(json.dumps(settings))
    return str(path)


def test_flags_left_out_keep_the_files_values(tmp_path: Path) -> None:
    given = {"rounds": 7, "min_clients": 3, "aggregator": "median", "seed_model_id": "m9"}
    started = _started("--settings", _settings_file(tmp_path, given))
    assert {key: started[key] for key in given} == given


def test_flags_given_override_the_file(tmp_path: Path) -> None:
    path = _settings_file(
        tmp_path, {"rounds": 7, "min_clients": 3, "aggregator": "median", "local_epochs": 4}
    )
    started = _started("--settings", path, "--rounds", "2", "--aggregator", "trimmed_mean:beta=0.2")
    assert started["rounds"] == 2 and started["aggregator"] == "trimmed_mean:beta=0.2"
    assert started["min_clients"] == 3 and started["local_epochs"] == 4  # from the file


def test_without_a_file_the_flags_defaults_are_the_sessions_defaults() -> None:
    started = _started()
    defaults = SessionConfig()
    assert (
        (started["rounds"], started["min_clients"], started["aggregator"])
        == (
            defaults.rounds,
            defaults.min_clients,
            defaults.aggregator,
        )
        == (3, 1, "fedavg")
    )
    assert _started("--seed-model", "m2", "--min-clients", "2")["seed_model_id"] == "m2"
