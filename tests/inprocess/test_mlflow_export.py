"""Each session as an MLflow run, written from a thread: one metric point per round, the
session's config as params, its end as tags; a tracking server that fails costs a warning,
never the session; a controller without mlflow refuses --mlflow with the extra to install.

The store is SQLite: mlflow 3 refuses its file store (``file:///...``, "maintenance
mode") unless MLFLOW_ALLOW_FILE_STORE is set.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from stratafl.controller.main import ControllerOptions, _export_to_mlflow
from stratafl.errors import ConfigError
from stratafl.observe.mlflow_export import SESSION_TAG, MlflowExport, round_metrics
from stratafl.observe.watchers import RoundLog, Watchers
from stratafl.records import RoundRecord
from stratafl.settings import SessionConfig
from stratafl.status import RoundStatus
from stratafl.store.state import StateStore
from stratafl.store.tables import sqlite_url
from tests.support.inprocess import Behaviour, InProcessFederation

MODEL = {"w": np.zeros((8, 4), np.float32), "b": np.zeros(4, np.float32)}
# mlflow's SQLAlchemy models use a loader SQLAlchemy 2.1 deprecates (mlflow's to fix)
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


def _run_session(tmp_path, tracking_uri: str, rounds: int) -> str:
    """A session of ``rounds`` over three honest clients, exported to ``tracking_uri``."""
    (tmp_path / "fed").mkdir()
    exporter = MlflowExport(tracking_uri, lambda sid: federation.store.session(sid).config)
    federation = InProcessFederation(tmp_path / "fed", watch=Watchers(RoundLog(), exporter))
    combiner = federation.add_combiner("combiner-0")
    for index in range(3):
        federation.add_client(combiner, index, Behaviour.HONEST)
    exporter.start()
    try:
        federation.seed(MODEL)

        async def run() -> str:
            config = SessionConfig(rounds=rounds, round_timeout=5.0, wait_for_clients_seconds=0)
            session_id = await federation.sessions.start(config)
            assert federation.sessions.current is not None
            await federation.sessions.current
            return session_id

        session_id = federation.run(run())
        assert federation.store.session(session_id).status == "finished"
        return session_id
    finally:
        # mlflow's first use of a SQLite store migrates it, which takes more than the
        # controller's 10 s shutdown bound on a loaded machine; the test waits it out
        exporter.close(timeout=300)
        federation.close()


def test_a_session_is_one_run_with_a_metric_point_per_round(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    session_id = _run_session(tmp_path, uri, rounds=3)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("stratafl")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags[SESSION_TAG] == session_id
    assert run.data.tags["stratafl.status"] == "finished"
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "3" and run.data.params["aggregator"] == "fedavg"
    for metric in ("accuracy", "worst_client_accuracy", "duration_seconds", "bytes", "clients"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert sorted(m.step for m in history) == [1, 2, 3], metric
    accuracy = client.get_metric_history(run.info.run_id, "accuracy")
    # client i scores i / 4 on 10 * (i + 1) examples: (0 * 10 + 0.25 * 20 + 0.5 * 30) / 60
    assert [m.value for m in accuracy] == pytest.approx([1 / 3] * 3)
    worst = client.get_metric_history(run.info.run_id, "worst_client_accuracy")
    assert {m.value for m in worst} == {0.0}
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "bytes"))


def test_an_unreachable_tracking_server_is_a_warning_not_a_failed_session(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with caplog.at_level(logging.WARNING, logger="stratafl.controller.mlflow"):
        _run_session(tmp_path, "http://127.0.0.1:9", rounds=1)  # asserts it finished
    warnings = [r.getMessage() for r in caplog.records if r.name == "stratafl.controller.mlflow"]
    assert warnings and all("the session goes on" in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_without_mlflow_the_controller_refuses_the_option_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    options = ControllerOptions(workdir=tmp_path, mlflow=f"sqlite:///{tmp_path / 'm.db'}")
    with pytest.raises(ConfigError) as refused:
        _export_to_mlflow(StateStore(sqlite_url(tmp_path)), options)
    assert "pip install 'stratafl[mlflow]'" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_failed_round_is_marked_and_has_no_accuracy():
    record = RoundRecord(
        session_id="s",
        number=2,
        status=RoundStatus.FAILED,
        model_in="m",
        started_at=0.0,
        duration=3.0,
    )
    metrics = round_metrics(record)
    assert metrics == {"clients": 0.0, "duration_seconds": 3.0, "bytes": 0.0, "failed": 1.0}
