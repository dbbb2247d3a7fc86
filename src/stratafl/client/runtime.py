"""The client runtime: one client of the protocol, on an event loop of its own.

The client dials out only (no open port). It speaks the protocol of
`stratafl.client.protocol` (the one the swarm drives too): it asks the controller for a
combiner, opens a task stream, does the tasks, and reconnects by itself when its combiner
goes away. `run` blocks its thread on a private event loop, so several runtimes may run
in threads of one process; `stop` (from any thread) cancels it.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from pathlib import Path

from stratafl.client.app import ClientApp
from stratafl.client.assigner import ControllerAssigner
from stratafl.client.counters import ClientCounters
from stratafl.client.models import ModelShelf
from stratafl.client.protocol import ClientProtocol
from stratafl.client.state import ClientState
from stratafl.restapi.schema import Assignment
from stratafl.transport.backoff import Backoff
from stratafl.transport.credentials import INSECURE, PeerCredentials

__all__ = ["ASSIGN_TIMEOUT_SECONDS", "ClientRuntime"]

ASSIGN_TIMEOUT_SECONDS = 10.0


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
        ready_file: Path | None = None,
    ) -> None:
        self.client_id = client_id
        self.state = ClientState(
            client_id,
            app,
            token=credentials.token,
            rng=rng,
            preferred_combiner=preferred_combiner,
            workdir=workdir,
            token_file=token_file,
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
            on_stream_open=None if self._ready_file is None else self._announce,
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
        `ConfigError` (a bad URL or client id) ends it, as no retry would help."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        protocol = self.protocol()
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            if self._stopped:
                return
            self._running = (asyncio.get_running_loop(), task)
        try:
            async with protocol.assigner:
                await protocol.run(self.state)
        except asyncio.CancelledError:
            if not self._stopped:
                raise
        finally:
            with self._lock:
                self._running = None
