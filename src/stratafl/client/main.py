"""Run a client process: load the app, then serve tasks until SIGTERM."""

from __future__ import annotations

import re
import signal
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from stratafl.attacks import attacked
from stratafl.client.app import ClientContext, load_app
from stratafl.client.packages import AppPackages, app_fetcher
from stratafl.client.runtime import ClientMetricsServing, ClientRuntime
from stratafl.errors import ConfigError
from stratafl.security import read_claims_unverified
from stratafl.security.own import OwnCertificate
from stratafl.settings import SHA256_PATTERN
from stratafl.transport.addresses import is_wildcard
from stratafl.transport.credentials import (
    INSECURE,
    PeerCredentials,
    refuse_certificates_when_insecure,
)


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
    ca_bundle: Path | None = None  # an organisation's CAs, trusted beside (or instead of) it
    insecure: bool = False  # no TLS, no token: for a controller started --insecure
    attack: str | None = None  # an attack this client runs, e.g. "sign_flip" (stratafl.attacks)
    combiner: str | None = None  # the combiner id to ask for; honoured while it has room
    workdir: Path | None = None  # keeps what must survive a restart (top-k, SCAFFOLD's c_i)
    accepted_combiners: tuple[str, ...] = ()  # the only combiners it connects to (empty: any)
    data_path: Path | None = None  # where this site's data is: ClientContext.data_path
    settings: dict[str, bool | int | float | str] = field(default_factory=dict)
    """The site's settings for the app, typed: ClientContext.settings."""
    metrics_port: int | None = None  # serve GET /metrics here (0: a free port); None: off
    metrics_host: str = "127.0.0.1"  # off loopback only with tls_cert and tls_key
    tls_cert: Path | None = None  # the organisation's certificate /metrics is served with
    tls_key: Path | None = None
    allowed_apps: tuple[str, ...] = ()  # SHA-256 of app packages this site runs (--allow-app)
    ready_file: Path | None = None  # gets {"combiner_id", "combiner_address"} once connected

    def __post_init__(self) -> None:
        for digest in self.allowed_apps:
            if not re.fullmatch(SHA256_PATTERN, digest):
                raise ConfigError(
                    f"--allow-app {digest!r} is not a SHA-256: give the 64 lowercase hex "
                    "digits strata app publish printed"
                )


def metrics_serving(options: ClientOptions) -> ClientMetricsServing | None:
    """Where and how the client serves ``/metrics`` (None: it does not): with its
    organisation's certificate if it has one, which must name ``metrics_host`` (any name
    will do on a wildcard bind)."""
    own = OwnCertificate.of(options.tls_cert, options.tls_key)
    if options.insecure:
        refuse_certificates_when_insecure(options.tls_cert, options.tls_key)
    if options.metrics_port is None:
        if own is not None:
            raise ConfigError("--tls-cert serves a client's /metrics: pass --metrics-port too")
        return None
    host = None if is_wildcard(options.metrics_host) else options.metrics_host
    identity = own.identity(b"", host=host) if own is not None else None
    return ClientMetricsServing(options.metrics_host, options.metrics_port, identity)


def run_client(options: ClientOptions) -> None:
    """Serve tasks until stopped; from the main thread, SIGTERM stops the client cleanly."""
    credentials = INSECURE
    client_id = options.client_id or f"client-{uuid.uuid4().hex[:8]}"
    if not options.insecure:
        credentials = PeerCredentials.from_files(
            options.token_file, options.ca_file, "client", ca_bundle=options.ca_bundle
        )
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
        data_path=options.data_path,
        settings=options.settings,  # ClientContext keeps a read-only copy
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
        accepted_combiners=options.accepted_combiners,
        metrics=metrics_serving(options),
        workdir=options.workdir,
        token_file=None if options.insecure else options.token_file,
        packages=AppPackages(
            options.allowed_apps,
            context=context,
            fetch=app_fetcher(options.controller, credentials),
            workdir=options.workdir,
        ),
        ready_file=options.ready_file,
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    runtime.run()
