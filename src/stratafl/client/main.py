"""Run a client process: load the app, then serve tasks until SIGTERM."""

from __future__ import annotations

import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from stratafl.attacks import attacked
from stratafl.client.app import ClientContext, load_app
from stratafl.client.runtime import ClientRuntime
from stratafl.errors import ConfigError
from stratafl.security import read_claims_unverified
from stratafl.transport.credentials import INSECURE, PeerCredentials


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """How to run a client: what `strata client start` parses its flags into."""

    controller: str  # the controller's URL, e.g. http://127.0.0.1:8080
    app: str  # package.module:attr or path/to/file.py:attr
    client_id: str | None = None  # default: client-<random>
    partition_id: int = 0
    num_partitions: int = 1
    partitioner: str = "iid"  # iid | dirichlet:ALPHA | shards:S [+shared:F]
    seed: int = 0
    token_file: Path | None = None  # this client's token (its id is the token's subject)
    ca_file: Path | None = None  # the federation's CA certificate
    insecure: bool = False  # no TLS, no token: for a controller started --insecure
    attack: str | None = None  # an attack this client runs, e.g. "sign_flip" (stratafl.attacks)
    combiner: str | None = None  # the combiner id to ask for; honoured while it has room
    workdir: Path | None = None  # keeps what must survive a restart (top-k, SCAFFOLD's c_i)
    ready_file: Path | None = None  # gets {"combiner_id", "combiner_address"} once connected


def run_client(options: ClientOptions) -> None:
    """Serve tasks until stopped; from the main thread, SIGTERM stops the client cleanly."""
    credentials = INSECURE
    client_id = options.client_id or f"client-{uuid.uuid4().hex[:8]}"
    if not options.insecure:
        credentials = PeerCredentials.from_files(options.token_file, options.ca_file, "client")
        assert credentials.token is not None
        subject = read_claims_unverified(credentials.token).subject
        if options.client_id and options.client_id != subject:
            raise ConfigError(
                f"--id {options.client_id} differs from the token's client {subject!r}; "
                "drop --id (a client's id is its token's subject)"
            )
        client_id = subject
    context = ClientContext(
        client_id=client_id,
        partition_id=options.partition_id,
        num_partitions=options.num_partitions,
        partitioner=options.partitioner,
        seed=options.seed,
    )
    app = load_app(options.app, context)
    if options.attack is not None:
        app = attacked(app, options.attack, client=options.partition_id)
    runtime = ClientRuntime(
        client_id,
        options.controller,
        app,
        credentials=credentials,
        preferred_combiner=options.combiner,
        workdir=options.workdir,
        token_file=None if options.insecure else options.token_file,
        ready_file=options.ready_file,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    runtime.run()
