"""The parts of tier 3, wired together explicitly (no globals); constructing them does no I/O."""

from __future__ import annotations

from pathlib import Path

from stratafl.controller.discovery import Discovery
from stratafl.controller.events import EventFeed
from stratafl.controller.link import CombinerLinks
from stratafl.controller.retention import RetentionPolicy
from stratafl.controller.sessions import SessionRunner
from stratafl.controller.trail import ModelTrail
from stratafl.controller.trust import Trust
from stratafl.observe.metrics import ControllerMetrics
from stratafl.observe.watchers import RoundLog, Watchers
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore
from stratafl.store.tables import sqlite_url


class Controller:
    """The state store, the model store, discovery, the trail, the links and the sessions."""

    def __init__(
        self,
        workdir: Path,
        database_url: str | None = None,
        model_store: str | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.workdir = workdir
        self.store = StateStore(database_url or sqlite_url(workdir))
        self.events = EventFeed()  # every event the store records, live (/events/stream)
        self.store.listen(self.events.publish)
        self.models = ModelStore(model_store or workdir / "models")
        self.discovery = Discovery(self.store)
        self.trail = ModelTrail(self.store, self.models, workdir / "staging", retention)
        self.links = CombinerLinks(self.discovery)
        self.sessions = SessionRunner(self.store, self.trail, self.links, workdir / "staging")
        self.metrics = ControllerMetrics()  # its own registry: served at GET /metrics
        self.metrics.watch_federation(self._sessions_running, self._combiner_clients)
        self.watchers = Watchers(RoundLog(), self.metrics)  # MLflow joins with --mlflow
        self.sessions.watch = self.watchers
        self.grpc_address = ""
        self.trust: Trust | None = None
        """The federation's CA, token signer and verifier; None when started --insecure."""

    def _sessions_running(self) -> int:
        return int(self.sessions.busy())

    def _combiner_clients(self) -> dict[str, int]:
        return {entry.combiner_id: len(entry.clients) for entry in self.discovery.online()}
