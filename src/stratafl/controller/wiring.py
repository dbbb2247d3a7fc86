"""The parts of tier 3, wired together explicitly (no globals) in one step.

A controller is built whole from values: what is known only after loading or binding
(its trust root, the gRPC address it announces, the credentials it dials combiners with)
is made first, by whoever starts it (`stratafl.controller.main`), and handed in. So no
part is filled in later and nothing reads a half-built controller. Constructing it does
no I/O and starts nothing; the state store is opened and closed by its owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import grpc

from stratafl.controller.discovery import Discovery
from stratafl.controller.events import EventFeed
from stratafl.controller.link import CombinerLinks
from stratafl.controller.retention import RetentionPolicy
from stratafl.controller.sessions import SessionRunner
from stratafl.controller.trail import ModelTrail
from stratafl.controller.trust import Trust
from stratafl.observe.metrics import ControllerMetrics
from stratafl.observe.watchers import RoundLog, SessionWatcher, Watchers
from stratafl.security.receipts import ReceiptKeys
from stratafl.store.apps import AppStore
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore

__all__ = ["Controller"]


class Controller:
    """The state store, the model store, discovery, the trail, the links and the sessions.

    ``trust`` is the federation's CA, token signer and verifier (None: the controller runs
    ``--insecure``); ``grpc_address`` is what ``/discovery`` announces to combiners;
    ``combiner_credentials`` secure the links to combiners; ``watchers`` hear of each
    round and session end besides the log and the metrics (MLflow with ``--mlflow``);
    ``receipts`` derive the clients' receipt keys (None: a fresh secret, for a test
    controller whose clients need not survive its restart).
    """

    def __init__(
        self,
        workdir: Path,
        store: StateStore,
        *,
        grpc_address: str,
        trust: Trust | None,
        combiner_credentials: grpc.ChannelCredentials | None = None,
        model_store: str | None = None,
        retention: RetentionPolicy | None = None,
        events: EventFeed | None = None,
        watchers: Sequence[SessionWatcher] = (),
        receipts: ReceiptKeys | None = None,
    ) -> None:
        self.workdir: Final = workdir
        self.store: Final = store
        self.grpc_address: Final = grpc_address
        self.trust: Final = trust
        self.events: Final = EventFeed() if events is None else events  # /events/stream
        store.listen(self.events.publish)
        self.models: Final = ModelStore(model_store or workdir / "models")
        self.apps: Final = AppStore(model_store or workdir / "models")  # packages, by digest
        self.discovery: Final = Discovery(store)
        self.trail: Final = ModelTrail(store, self.models, workdir / "staging", retention)
        self.receipts: Final = ReceiptKeys.generate() if receipts is None else receipts
        self.links: Final = CombinerLinks(
            self.discovery,
            self.receipts,
            credentials=combiner_credentials,
            signer=trust.signer if trust is not None else None,
        )
        self.metrics: Final = ControllerMetrics()  # its own registry: served at GET /metrics
        self.watchers: Final = Watchers(RoundLog(), self.metrics, *watchers)
        self.sessions: Final = SessionRunner(
            store, self.trail, self.links, workdir / "staging", watch=self.watchers
        )
        self.metrics.watch_federation(self._sessions_running, self._combiner_clients)

    def _sessions_running(self) -> int:
        return int(self.sessions.busy())

    def _combiner_clients(self) -> dict[str, int]:
        return {entry.combiner_id: len(entry.clients) for entry in self.discovery.online()}
