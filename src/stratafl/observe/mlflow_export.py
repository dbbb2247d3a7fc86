"""Each session as an MLflow run: its config as params, each round's numbers as metrics.

`strata controller start --mlflow URI` adds an `MlflowExport` to the session loop's
watchers. The loop only queues what happened (no I/O on the event loop); one worker thread
talks to the tracking server, so a slow or failing server costs a logged warning, never
a round or a session. The run is found again by its ``stratafl.session_id`` tag, so a
session resumed after a controller restart goes on in the same run.

mlflow is an optional extra (``pip install 'stratafl[mlflow]'``, mlflow-skinny): it is
imported only when an export is opened.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from stratafl.errors import ConfigError, StrataError
from stratafl.records import RoundRecord
from stratafl.status import RoundStatus, SessionStatus

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["DEFAULT_EXPERIMENT", "SESSION_TAG", "MlflowExport", "round_metrics"]

log = logging.getLogger("stratafl.controller.mlflow")

DEFAULT_EXPERIMENT = "stratafl"
SESSION_TAG = "stratafl.session_id"
STATUS_TAG = "stratafl.status"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
MAX_QUEUED = 10_000
CLOSE_SECONDS = 10.0
_RUN_STATUS = {
    SessionStatus.FINISHED: "FINISHED",
    SessionStatus.STOPPED: "FINISHED",
    SessionStatus.FAILED: "FAILED",
    SessionStatus.CANCELLED: "KILLED",
}
_NOT_A_NAME = re.compile(r"[^\w\-. /]")

Job = Callable[["MlflowClient"], None]


def round_metrics(record: RoundRecord) -> dict[str, float]:
    """One round's MLflow metrics: every validation mean the clients reported (accuracy,
    loss, ...), the worst client's accuracy, the clients that contributed, the round's
    seconds and the bytes it moved on both links."""
    validation = record.validation
    metrics = {_NOT_A_NAME.sub("_", k): float(v) for k, v in (validation.model_extra or {}).items()}
    accuracies = [m["accuracy"] for m in validation.per_client.values() if "accuracy" in m]
    if accuracies:
        metrics["worst_client_accuracy"] = min(accuracies)
    metrics["clients"] = float(len(record.participants))
    metrics["duration_seconds"] = record.duration
    metrics["bytes"] = float(record.traffic.moved)
    if record.status != RoundStatus.FINISHED:
        metrics["failed"] = 1.0
    return metrics


class MlflowExport:
    """A `SessionWatcher` that writes sessions to an MLflow tracking server from a thread.

    Constructing it does no I/O; `start` starts the thread, `close` drains the queue (for
    at most ``CLOSE_SECONDS``) and stops it.
    """

    def __init__(
        self,
        tracking_uri: str,
        config_of: Callable[[str], Mapping[str, Any]],
        *,
        experiment: str = DEFAULT_EXPERIMENT,
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--mlflow needs the mlflow client: pip install 'stratafl[mlflow]'")
        self.tracking_uri = tracking_uri
        self._config_of = config_of
        self._experiment = experiment
        self._jobs: queue.Queue[Job | None] = queue.Queue(MAX_QUEUED)
        self._announced: set[str] = set()  # sessions whose run was asked for (event loop)
        self._runs: dict[str, str] = {}  # session id -> run id (worker thread only)
        self._thread = threading.Thread(target=self._work, name="mlflow-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Let the queued jobs finish (at most ``timeout`` seconds), then stop."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout)

    def round_recorded(self, record: RoundRecord) -> None:
        self._announce(record.session_id, record.started_at)
        metrics = round_metrics(record)
        stamp = int((record.started_at + record.duration) * 1000)
        self._submit(lambda client: self._log_round(client, record, metrics, stamp))

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        self._announce(session_id, time.time())
        self._submit(lambda client: self._end_run(client, session_id, status, reason))

    # -- the event loop's side: queue, never wait ---------------------------------------------

    def _announce(self, session_id: str, started_at: float) -> None:
        if session_id in self._announced:
            return
        self._announced.add(session_id)
        try:
            config = dict(self._config_of(session_id))
        except StrataError:
            config = {}
        start_ms = int(started_at * 1000)
        self._submit(lambda client: self._open_run(client, session_id, config, start_ms))

    def _submit(self, job: Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            log.warning("MLflow export is %d jobs behind; dropping one", MAX_QUEUED)

    # -- the worker thread --------------------------------------------------------------------

    def _work(self) -> None:
        client: MlflowClient | None = None
        while (job := self._jobs.get()) is not None:
            try:
                if client is None:
                    from mlflow.tracking import MlflowClient

                    client = MlflowClient(tracking_uri=self.tracking_uri)
                job(client)
            except Exception as exc:  # noqa: BLE001 - a tracking server's fault is not ours
                log.warning(
                    "MLflow export to %s failed, the session goes on: %s",
                    self.tracking_uri,
                    str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
                )

    def _open_run(
        self, client: MlflowClient, session_id: str, config: dict[str, Any], start_ms: int
    ) -> None:
        from mlflow.entities import Param

        experiment = client.get_experiment_by_name(self._experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else client.create_experiment(self._experiment)
        )
        safe_id = _NOT_A_NAME.sub("", session_id)
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.`{SESSION_TAG}` = '{safe_id}'", max_results=1
        )
        if found:
            self._runs[session_id] = found[0].info.run_id
            return
        run = client.create_run(
            experiment_id,
            start_time=start_ms,
            tags={SESSION_TAG: session_id},
            run_name=f"session-{session_id}",
        )
        self._runs[session_id] = run.info.run_id
        params = [Param(key, _param_value(value)) for key, value in sorted(config.items())]
        for first in range(0, len(params), 100):  # MLflow takes 100 params per batch
            client.log_batch(run.info.run_id, params=params[first : first + 100])

    def _log_round(
        self, client: MlflowClient, record: RoundRecord, metrics: dict[str, float], stamp: int
    ) -> None:
        from mlflow.entities import Metric

        run_id = self._runs.get(record.session_id)
        if run_id is None:  # its run could not be opened: that failure was logged
            return
        batch = [Metric(k, v, stamp, record.number) for k, v in sorted(metrics.items())]
        client.log_batch(run_id, metrics=batch)

    def _end_run(
        self, client: MlflowClient, session_id: str, status: SessionStatus, reason: str
    ) -> None:
        run_id = self._runs.get(session_id)
        if run_id is None:
            return
        client.set_tag(run_id, STATUS_TAG, status.value)
        if reason:
            client.set_tag(run_id, "stratafl.reason", reason[:MAX_PARAM_CHARS])
        client.set_terminated(run_id, _RUN_STATUS.get(status, "FINISHED"))


def _param_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_CHARS]
