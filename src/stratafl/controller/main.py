"""The controller process: state store, model store, discovery, sessions, gRPC and REST."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import uvicorn

from stratafl.controller.recovery import recover
from stratafl.controller.rest.app import create_api
from stratafl.controller.rest.rates import DEFAULT_RATE_LIMITS, RateLimits
from stratafl.controller.retention import RetentionPolicy
from stratafl.controller.servicer import ControllerServicer
from stratafl.controller.trust import Trust
from stratafl.controller.wiring import Controller
from stratafl.observe.mlflow_export import DEFAULT_EXPERIMENT, MlflowExport
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security.own import OwnCertificate, read_ca_bundle
from stratafl.security.policy import GRPC_ROLES
from stratafl.security.receipts import ReceiptKeys
from stratafl.store.state import StateStore
from stratafl.store.tables import sqlite_url
from stratafl.transport.addresses import advertised_host, host_port, is_wildcard
from stratafl.transport.channels import LinkSecurity, create_aio_server
from stratafl.transport.credentials import (
    PeerCredentials,
    refuse_certificates_when_insecure,
    refuse_insecure_off_loopback,
    serving_security,
)

log = logging.getLogger("stratafl.controller")


class _QuietServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: the controller's loop owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True, kw_only=True)
class ControllerOptions:
    """How to run a controller: what `strata controller start` parses its flags into."""

    workdir: Path = Path(".strata/controller")
    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 needs advertise_address
    advertise_address: str | None = None  # what /discovery announces (default: host)
    http_port: int = 8080  # 0 picks a free port
    grpc_port: int = 0  # for combiners; 0 picks a free port, announced at /discovery
    database_url: str | None = None  # default: SQLite in workdir
    model_store: str | None = None  # a folder or an fsspec URL; default: workdir/models
    ready_file: Path | None = None  # gets {"url", "grpc_address", ...} as JSON once serving
    insecure: bool = False  # no TLS and no tokens: refused unless host is a loopback address
    tls_hosts: tuple[str, ...] = ()  # more names or addresses the controller is reached at
    keep_last: int = 10  # each session's last models kept, with its best (0: keep every model)
    keep_every: int = 10  # every N-th round's model kept (0: keep every model)
    mlflow: str | None = None  # an MLflow tracking URI: each session becomes a run
    mlflow_experiment: str = DEFAULT_EXPERIMENT  # the MLflow experiment the runs go to
    tls_cert: Path | None = None  # an organisation's server certificate (PEM, chain after it)
    tls_key: Path | None = None  # its private key (PEM, unencrypted)
    ca_bundle: Path | None = None  # CAs trusted beside the federation's when dialling combiners
    rest_rate: float = DEFAULT_RATE_LIMITS.per_second  # REST requests per second per caller
    rest_burst: float = DEFAULT_RATE_LIMITS.burst  # REST requests one caller may send at once


async def serve_controller(options: ControllerOptions) -> None:
    """Serve until SIGTERM or SIGINT: TLS and tokens on every link unless ``insecure``."""
    host = options.host
    advertised = advertised_host(host, options.advertise_address)
    controller, server, exporter = _build(options, advertised)
    trust = controller.trust
    await controller.discovery.recall_assignments()  # loads and selection survive a restart
    await controller.discovery.forget_stored(
        "the controller restarted; it waits for it to register"
    )
    recover(controller.store, controller.trail, controller.sessions)  # before anyone is served
    pb_grpc.add_ControllerServicer_to_server(
        ControllerServicer(
            controller.discovery, controller.models, (lambda: trust.revoked) if trust else list
        ),
        server,
    )
    await server.start()
    config = uvicorn.Config(
        create_api(controller, rate_limits=RateLimits(options.rest_rate, options.rest_burst)),
        host=host,
        port=options.http_port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(trust.paths.cert) if trust else None,
        ssl_keyfile=str(trust.paths.key) if trust else None,
    )
    http = _QuietServer(config)
    serving = asyncio.ensure_future(http.serve())
    while not http.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    http_bound = http.servers[0].sockets[0].getsockname()[1]
    url = f"{'https' if trust else 'http'}://{host_port(advertised, http_bound)}"
    log.info("controller: REST %s, gRPC %s", url, controller.grpc_address)
    if options.ready_file is not None:
        ready = {
            "url": url,
            "grpc_address": controller.grpc_address,
            "ca_file": str(trust.ca_path) if trust else None,
            "admin_token_file": str(trust.admin_token_path) if trust else None,
        }
        options.ready_file.write_text(json.dumps(ready))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        await controller.discovery.sweep()
        if not controller.sessions.busy():  # a session evens the load before each round
            controller.links.balance.kick()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    controller.events.close()  # event streams end, or uvicorn would wait on them forever
    http.should_exit = True
    await serving
    await server.stop(grace=1)
    await controller.links.close()
    if exporter is not None:
        await asyncio.to_thread(exporter.close)
    controller.store.close()


def _build(
    options: ControllerOptions, advertised: str
) -> tuple[Controller, grpc.aio.Server, MlflowExport | None]:
    """The controller, built in one step once what it needs is loaded or bound: the state
    store opened, the trust root loaded (or made), the gRPC port bound (not yet serving)
    so its address is known, and the MLflow export started if asked for."""
    retention = RetentionPolicy(keep_last=options.keep_last, keep_every=options.keep_every)
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    store = StateStore(options.database_url or sqlite_url(workdir))
    exporter = _export_to_mlflow(store, options)  # before recovery resumes a session
    store.open()
    trust, security = _secure(store, options, advertised)
    server, bound = create_aio_server(
        host_port(options.host, options.grpc_port),
        interceptors=security.interceptors,
        credentials=security.server_credentials,
    )
    # The receipt secret lives beside the token key (in the work folder when insecure):
    # a restarted controller derives the same keys, so its clients' receipts still verify.
    folder = trust.folder if trust is not None else workdir
    receipts = ReceiptKeys.load_or_create(folder / "receipt.key")
    controller = Controller(
        workdir,
        store,
        grpc_address=host_port(advertised, bound),
        trust=trust,
        combiner_credentials=security.channel_credentials,
        model_store=options.model_store,
        retention=retention,
        watchers=() if exporter is None else (exporter,),
        receipts=receipts,
    )
    return controller, server, exporter


def _export_to_mlflow(store: StateStore, options: ControllerOptions) -> MlflowExport | None:
    """Each session as an MLflow run if ``options.mlflow`` is set; raises `ConfigError`
    (naming the extra to install) before anything is served if mlflow is missing."""
    if options.mlflow is None:
        return None
    exporter = MlflowExport(
        options.mlflow,
        lambda session_id: store.session(session_id).config,
        experiment=options.mlflow_experiment,
    )
    exporter.start()
    log.info("sessions are exported to MLflow at %s", options.mlflow)
    return exporter


def _secure(
    store: StateStore, options: ControllerOptions, advertised: str
) -> tuple[Trust | None, LinkSecurity]:
    """Load (or make, at the first start) the federation's trust root, and how the links
    are secured with it; no trust root and plain links when insecure."""
    if options.insecure:
        refuse_insecure_off_loopback(options.host, "controller")
        refuse_certificates_when_insecure(options.tls_cert, options.tls_key, options.ca_bundle)
        return None, LinkSecurity()
    hosts = {"127.0.0.1", "localhost", *options.tls_hosts}
    hosts.add(advertised)
    if not is_wildcard(options.host):
        hosts.add(options.host)
    own = OwnCertificate.of(options.tls_cert, options.tls_key)
    bundle = read_ca_bundle(options.ca_bundle) if options.ca_bundle is not None else b""
    trust = Trust.load_or_create(options.workdir / "trust", sorted(hosts))
    trust = trust.with_organisation(own, host=advertised, bundle_pem=bundle)
    controller_token = trust.start(store)
    dialing = PeerCredentials(token=controller_token, ca_pem=trust.dialing_pem)
    security = serving_security(trust.identity, trust.verify, GRPC_ROLES, dialing)
    return trust, security
