"""The client runtime: one client of the protocol, on an event loop of its own.

The client dials out only (no open port). It speaks the protocol of
`stratafl.client.protocol` (the one the swarm drives too): it asks the controller for a
combiner, opens a task stream, does the tasks, and reconnects by itself when its combiner
goes away. `run` blocks its thread on a private event loop, so several runtimes may run
in threads of one process; `stop` (from any thread) cancels it.

It logs one line per task it answers (session, round, kind, examples, seconds, the app's
metrics; in JSON logs also as fields) and, given a `ClientMetricsServing`, serves its
Prometheus metrics on the same loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path

from stratafl.client.app import ClientApp
from stratafl.client.assigner import ControllerAssigner
from stratafl.client.counters import ClientCounters, TaskDone
from stratafl.client.models import ModelShelf
from stratafl.client.packages import AppPackages
from stratafl.client.protocol import ClientProtocol
from stratafl.client.state import ClientState
from stratafl.errors import AuthError, ConfigError
from stratafl.observe.client_metrics import ClientMetrics
from stratafl.observe.metrics_server import MetricsServer
from stratafl.restapi.schema import Assignment
from stratafl.security import Claims, TlsIdentity
from stratafl.transport.addresses import host_port
from stratafl.transport.backoff import Backoff
from stratafl.transport.credentials import INSECURE, PeerCredentials

__all__ = ["ASSIGN_TIMEOUT_SECONDS", "ClientMetricsServing", "ClientRuntime"]

ASSIGN_TIMEOUT_SECONDS = 10.0

log = logging.getLogger("stratafl.client")


@dataclass(frozen=True)
class ClientMetricsServing:
    """Where a client serves ``GET /metrics``: HTTPS with ``identity`` (its organisation's
    certificate), else plain HTTP on loopback; admin tokens checked unless insecure."""

    host: str = "127.0.0.1"
    port: int = 0
    identity: TlsIdentity | None = None


class ClientRuntime:
    """Runs one client until ``stop()``; safe to run several in threads of one process.
    Constructing it starts nothing and reads nothing."""

    def __init__(
        self,
        client_id: str,
        controller_url: str,
        app: ClientApp,
        *,
        credentials: PeerCredentials = INSECURE,
        rng: random.Random | None = None,
        preferred_combiner: str | None = None,
        workdir: Path | None = None,
        token_file: Path | None = None,
        packages: AppPackages | None = None,
        accepted_combiners: tuple[str, ...] = (),
        metrics: ClientMetricsServing | None = None,
        ready_file: Path | None = None,
    ) -> None:
        self.client_id = client_id
        self.state = ClientState(
            client_id,
            app,
            token=credentials.token,
            rng=rng,
            preferred_combiner=preferred_combiner,
            accepted_combiners=accepted_combiners,
            workdir=workdir,
            token_file=token_file,
            packages=packages,
        )
        """What this client keeps: its backoff, its model, top-k's and drift correction's
        state (in ``workdir``)."""
        self.counters = ClientCounters()
        self._controller_url = controller_url
        self._ready_file = ready_file
        self._credentials = credentials
        self._lock = threading.Lock()
        self._stopped = False
        self._running: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None
        self._serving = metrics
        self.metrics = ClientMetrics()
        self.metrics.watch(lambda: dataclasses.asdict(self.counters))
        self.metrics_url: str | None = None
        """Where ``/metrics`` is served once running (None: not served)."""

    @property
    def backoff(self) -> Backoff:
        return self.state.backoff

    @property
    def moves(self) -> int:
        """Times the controller moved this client to even the load."""
        return self.counters.moves

    def protocol(self) -> ClientProtocol:
        """The protocol this client speaks, on its own assigner, shelf and counters."""
        assigner = ControllerAssigner(
            self._controller_url,
            verify=self._credentials.http_verify(),
            timeout=ASSIGN_TIMEOUT_SECONDS,
            pool=1,
        )
        return ClientProtocol(
            assigner,
            channel_credentials=self._credentials.tls_credentials(),
            shelf=ModelShelf(1, shared=False),
            counters=self.counters,
            connecting=asyncio.Semaphore(1),
            on_task=self._task_done,
            on_stream_open=None if self._ready_file is None else self._announce,
        )

    def _task_done(self, done: TaskDone) -> None:
        """One line per task, and its metrics."""
        self.metrics.task_done(done.kind, done.examples, done.seconds)
        shown = ", ".join(f"{name}={value:.4g}" for name, value in sorted(done.metrics.items()))
        log.info(
            "%s: %s session %s round %d: %d examples, %.2f s, metrics {%s}",
            self.client_id,
            done.kind,
            done.session_id,
            done.round,
            done.examples,
            done.seconds,
            shown,
            extra={
                "session": done.session_id,
                "round": done.round,
                "kind": done.kind,
                "examples": done.examples,
                "seconds": round(done.seconds, 3),
                "metrics": dict(done.metrics),
            },
        )

    def _announce(self, client: ClientState, assignment: Assignment) -> None:
        """Write the ready file: this client has a task stream open (`strata health`)."""
        assert self._ready_file is not None
        ready = {"combiner_id": assignment.combiner_id, "combiner_address": assignment.address}
        self._ready_file.write_text(json.dumps(ready))

    def stop(self) -> None:
        """End `run` (from any thread): the task in hand is abandoned, the stream closed."""
        with self._lock:
            self._stopped = True
            running = self._running
        if running is not None:
            loop, task = running
            loop.call_soon_threadsafe(task.cancel)

    def run(self) -> None:
        """Serve tasks until stopped, reconnecting whenever the combiner goes away; a
        refusal no retry would mend (`stratafl.client.protocol.FINAL_ERRORS`: a CA that
        does not verify the controller, the wrong URL scheme, a revoked, expired or
        wrong-role token) ends it with that error."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        protocol = self.protocol()
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            if self._stopped:
                return
            self._running = (asyncio.get_running_loop(), task)
        exposed = self._metrics_server(protocol)
        try:
            if exposed is not None:
                await self._serve_metrics(exposed)
            async with protocol.assigner:
                await protocol.run(self.state)
        except asyncio.CancelledError:
            if not self._stopped:
                raise
        finally:
            if exposed is not None:
                await exposed.close()
            with self._lock:
                self._running = None

    def _metrics_server(self, protocol: ClientProtocol) -> MetricsServer | None:
        """The ``/metrics`` server asked for, checking admin tokens with the controller's
        key once the protocol knows it (unless insecure); None when not asked for."""
        serving = self._serving
        if serving is None:
            return None
        if self._credentials.token is None:
            return MetricsServer(self.metrics.registry)

        def verify(token: str) -> Claims:
            verifier = protocol.token_verifier
            if verifier is None:
                raise AuthError(
                    "this client has not reached the controller yet, so it cannot check "
                    "tokens; scrape again once it has"
                )
            return verifier.verify(token)

        identity = serving.identity
        return MetricsServer(
            self.metrics.registry,
            verify=verify,
            identity=(lambda: identity) if identity is not None else None,
        )

    async def _serve_metrics(self, exposed: MetricsServer) -> None:
        serving = self._serving
        assert serving is not None
        try:
            port = await exposed.start(serving.host, serving.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host_port(serving.host, serving.port)}: "
                f"{exc.strerror or exc}; pick another --metrics-port (0: a free one)"
            ) from exc
        # a reconnect serves on a fresh loop: the same port, so a scrape target stays valid
        self._serving = dataclasses.replace(serving, port=port)
        self.metrics_url = f"{exposed.scheme}://{host_port(serving.host, port)}/metrics"
        log.info("client metrics at %s", self.metrics_url)
