"""Run a combiner: serve clients and the controller, register, heartbeat, report clients.

The combiner outlives its controller: it waits for a controller that is not up yet, and
finds a restarted one by itself (`combiner.uplink`). It serves under the name it
advertises (``--advertise-address``; never ``0.0.0.0``), and it clears what a dead
predecessor left in its work folder before it serves (`combiner.workdir`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from stratafl.combiner.capacity import serving_capacity
from stratafl.combiner.enrolment import (
    EnrolmentPlan,
    ServingTrust,
    combiner_id_of,
    enrol_when_reachable,
)
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import (
    MIN_TRANSFER_BYTES_PER_SECOND,
    TRANSFER_GRACE_SECONDS,
    CombinerRoundRunner,
)
from stratafl.combiner.servicer import CombinerServicer
from stratafl.combiner.uplink import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, ControllerUplink
from stratafl.combiner.workdir import WorkdirClaim
from stratafl.errors import ConfigError
from stratafl.observe.combiner_metrics import CombinerMetrics
from stratafl.observe.metrics_server import MetricsServer
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security.own import OwnCertificate
from stratafl.security.policy import GRPC_ROLES
from stratafl.transport.addresses import advertised_host, host_port, is_wildcard
from stratafl.transport.auth import AuthInterceptor
from stratafl.transport.backoff import Backoff
from stratafl.transport.channels import LinkSecurity, create_aio_server
from stratafl.transport.credentials import (
    refuse_certificates_when_insecure,
    refuse_insecure_off_loopback,
)

log = logging.getLogger("stratafl.combiner")


@dataclass(frozen=True, kw_only=True)
class CombinerOptions:
    """How to run a combiner: what `strata combiner start` parses its flags into."""

    controller: str  # the controller's URL, e.g. http://127.0.0.1:8080
    workdir: Path
    host: str = "127.0.0.1"  # the address to bind; 0.0.0.0 needs advertise_address
    port: int = 0  # 0 picks a free port
    advertise_address: str | None = None  # the name or IP clients reach it at (default: host)
    max_clients: int | None = None  # None: what this machine allows (`combiner.capacity`)
    combiner_id: str | None = None  # default: combiner-<random>
    ready_file: Path | None = None  # gets {"grpc_address", "metrics_url"} once registered
    token_file: Path | None = None  # this combiner's token (its id is the token's subject)
    ca_file: Path | None = None  # the federation's CA certificate
    insecure: bool = False  # no TLS, no tokens: for a controller started --insecure
    transfer_grace_seconds: float = TRANSFER_GRACE_SECONDS  # a transfer holds a slot at most
    min_transfer_rate: float = MIN_TRANSFER_BYTES_PER_SECOND  # this long plus size / rate
    metrics: bool = True  # serve GET /metrics (HTTPS and an admin token unless insecure)
    metrics_port: int = 0  # 0 picks a free port, logged and written to the ready file
    tls_cert: Path | None = None  # an organisation's certificate for the advertised name
    tls_key: Path | None = None  # its private key; with both, no certificate is requested
    ca_bundle: Path | None = None  # CAs trusted beside (or instead of) ca_file when dialling


def enrolment_plan(options: CombinerOptions) -> EnrolmentPlan:
    """What each enrolment asks for; raises `ConfigError` before anything starts."""
    advertised = advertised_host(options.host, options.advertise_address)
    own = OwnCertificate.of(options.tls_cert, options.tls_key)
    if options.insecure:
        refuse_insecure_off_loopback(options.host, "combiner")
        refuse_certificates_when_insecure(options.tls_cert, options.tls_key, options.ca_bundle)
    elif own is not None:
        own.check(advertised)  # a certificate peers would refuse stops it before it starts
    hosts = [advertised]
    if not is_wildcard(options.host) and options.host != advertised:
        hosts.append(options.host)
    return EnrolmentPlan(
        controller=options.controller,
        combiner_id=combiner_id_of(
            insecure=options.insecure,
            combiner_id=options.combiner_id,
            token_file=options.token_file,
            ca_file=options.ca_file,
            ca_bundle=options.ca_bundle,
        ),
        hosts=hosts,
        token_file=options.token_file,
        ca_file=options.ca_file,
        ca_bundle=options.ca_bundle,
        own=own,
        insecure=options.insecure,
    )


async def serve_combiner(options: CombinerOptions) -> None:
    """Serve until SIGTERM or SIGINT, waiting first for the controller if it is not up."""
    plan = enrolment_plan(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with WorkdirClaim(options.workdir):
        backoff = Backoff(BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS)
        enrolment = await enrol_when_reachable(plan.enrol, stop, backoff, retry_refusals=False)
        if enrolment is None:
            return
        trust = None if options.insecure else ServingTrust(enrolment)
        security = LinkSecurity()
        if trust is not None:
            security = LinkSecurity(
                server_credentials=trust.server_credentials(),
                interceptors=(AuthInterceptor(trust.verify, GRPC_ROLES),),
            )
        max_clients = serving_capacity(options.max_clients)
        uplink = ControllerUplink(
            plan, enrolment, trust=trust, max_clients=max_clients, backoff=backoff
        )
        registry = ClientRegistry(max_clients, on_change=uplink.report_client)
        await _serve(options, plan, registry, uplink, security, stop, trust)


async def _serve(
    options: CombinerOptions,
    plan: EnrolmentPlan,
    registry: ClientRegistry,
    uplink: ControllerUplink,
    security: LinkSecurity,
    stop: asyncio.Event,
    trust: ServingTrust | None,
) -> None:
    workdir, combiner_id = options.workdir, plan.combiner_id
    metrics = CombinerMetrics()
    cache = ModelCache(
        workdir / "models",
        lambda model_id: uplink.stub.DownloadModel(pb.ModelRequest(model_id=model_id)),
    )
    rounds = CombinerRoundRunner(
        combiner_id,
        registry,
        cache,
        workdir / "updates",
        transfer_grace=options.transfer_grace_seconds,
        min_transfer_rate=options.min_transfer_rate,
        metrics=metrics,
    )
    metrics.watch(clients=lambda: len(registry.ids()), transfers=rounds.transfers)
    server, bound = create_aio_server(
        host_port(options.host, options.port),
        interceptors=security.interceptors,
        credentials=security.server_credentials,
    )
    pb_grpc.add_CombinerServicer_to_server(CombinerServicer(registry, cache, rounds), server)
    await server.start()
    exposed = MetricsServer(
        metrics.registry,
        verify=trust.verify if trust else None,
        identity=(lambda: trust.identity) if trust else None,
    )
    try:
        address = host_port(plan.hosts[0], bound)
        metrics_url = await _serve_metrics(exposed, options, plan.hosts[0])
        if await uplink.start(address, stop):
            log.info("combiner %s serving on %s", combiner_id, address)
            if options.ready_file is not None:
                ready = {"grpc_address": address, "metrics_url": metrics_url}
                options.ready_file.write_text(json.dumps(ready))
            await uplink.run(registry, stop)
    finally:
        await server.stop(grace=1)
        await exposed.close()
        await uplink.close()


async def _serve_metrics(exposed: MetricsServer, options: CombinerOptions, host: str) -> str | None:
    """Start ``GET /metrics`` unless turned off; returns its URL (logged)."""
    if not options.metrics:
        return None
    try:
        port = await exposed.start(options.host, options.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {host_port(options.host, options.metrics_port)}: "
            f"{exc.strerror or exc}; pick another --metrics-port (0: a free one)"
        ) from exc
    url = f"{exposed.scheme}://{host_port(host, port)}/metrics"
    log.info("combiner metrics at %s", url)
    return url
