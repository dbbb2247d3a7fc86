"""Run a client process: load the app, then serve tasks until SIGTERM."""

from __future__ import annotations

import signal
import threading
import uuid
from dataclasses import dataclass

import grpc

from stratafl.client.app import ClientContext, load_app
from stratafl.client.runtime import ClientRuntime


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How to run a client: what `strata client start` parses its flags into."""

    controller: str  # the controller's URL, e.g. http://127.0.0.1:8080
    app: str  # package.module:attr or path/to/file.py:attr
    client_id: str | None = None  # default: client-<random>
    partition_id: int = 0
    num_partitions: int = 1
    partitioner: str = "iid"  # iid | dirichlet:ALPHA | shards:S
    seed: int = 0


def run_client(
    options: ClientOptions, *, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Serve tasks until stopped; from the main thread, SIGTERM stops the client cleanly."""
    client_id = options.client_id or f"client-{uuid.uuid4().hex[:8]}"
    context = ClientContext(
        client_id=client_id,
        partition_id=options.partition_id,
        num_partitions=options.num_partitions,
        partitioner=options.partitioner,
        seed=options.seed,
    )
    app = load_app(options.app, context)
    runtime = ClientRuntime(client_id, options.controller, app, credentials=credentials)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    runtime.run()
