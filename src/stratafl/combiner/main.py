"""Run a combiner: serve clients and the controller, register, heartbeat, report clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from stratafl.api import ControllerClient
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import (
    MIN_TRANSFER_BYTES_PER_SECOND,
    TRANSFER_GRACE_SECONDS,
    RoundRunner,
)
from stratafl.combiner.servicer import CombinerServicer
from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security import (
    TlsIdentity,
    TokenVerifier,
    certificate_request,
    read_claims_unverified,
)
from stratafl.security.policy import GRPC_ROLES
from stratafl.transport.channels import LinkSecurity, create_aio_server, open_aio_channel
from stratafl.transport.credentials import (
    PeerCredentials,
    refuse_insecure_off_loopback,
    serving_security,
)

log = logging.getLogger("stratafl.combiner")

HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class CombinerOptions:
    """How to run a combiner: what `strata combiner start` parses its flags into."""

    controller: str  # the controller's URL, e.g. http://127.0.0.1:8080
    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    max_clients: int = 1000
    combiner_id: str | None = None  # default: combiner-<random>
    ready_file: Path | None = None  # gets the combiner's gRPC address once serving
    token_file: Path | None = None  # this combiner's token (its id is the token's subject)
    ca_file: Path | None = None  # the federation's CA certificate
    insecure: bool = False  # no TLS, no tokens: for a controller started --insecure
    transfer_grace_seconds: float = TRANSFER_GRACE_SECONDS  # a transfer holds a slot at most
    min_transfer_rate: float = MIN_TRANSFER_BYTES_PER_SECOND  # this long plus size / rate


@dataclass(frozen=True)
class Enrolment:
    """What a combiner learns from the controller before it serves."""

    combiner_id: str
    grpc_address: str
    security: LinkSecurity
    verifier: TokenVerifier | None


def enrol(options: CombinerOptions) -> Enrolment:
    """Find the controller's gRPC service and, on a secured federation, get this combiner a
    certificate for its address and the key that verifies clients' tokens."""
    if options.insecure:
        refuse_insecure_off_loopback(options.host, "combiner")
        with ControllerClient(options.controller, timeout=30) as controller:
            info = controller.discovery()
        combiner_id = options.combiner_id or f"combiner-{uuid.uuid4().hex[:8]}"
        return Enrolment(combiner_id, info.grpc_address, LinkSecurity(), None)
    dialing = PeerCredentials.from_files(options.token_file, options.ca_file, "combiner")
    assert dialing.token is not None
    combiner_id = read_claims_unverified(dialing.token).subject
    if options.combiner_id and options.combiner_id != combiner_id:
        raise ConfigError(
            f"--id {options.combiner_id} differs from the token's combiner {combiner_id!r}; "
            "drop --id (a combiner's id is its token's subject)"
        )
    csr, key = certificate_request(combiner_id, [options.host])
    with ControllerClient(
        options.controller, timeout=30, token=dialing.token, verify=dialing.http_verify()
    ) as controller:
        info = controller.discovery()
        signed = controller.request_certificate(csr, [options.host])
    identity = TlsIdentity(signed.certificate_pem.encode(), key, signed.ca_pem.encode())
    verifier = TokenVerifier(info.token_public_key_pem.encode())
    security = serving_security(
        identity, verifier.verify, GRPC_ROLES, dialing.with_identity(identity)
    )
    return Enrolment(combiner_id, info.grpc_address, security, verifier)


async def serve_combiner(options: CombinerOptions) -> None:
    """Serve until SIGTERM or SIGINT."""
    host, max_clients, workdir = options.host, options.max_clients, options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    enrolment = await asyncio.to_thread(enrol, options)
    combiner_id, security = enrolment.combiner_id, enrolment.security
    channel = open_aio_channel(enrolment.grpc_address, credentials=security.channel_credentials)
    controller = pb_grpc.ControllerStub(channel)
    background: set[asyncio.Task[object]] = set()

    def report(client_id: str, connected: bool) -> None:
        event = pb.ClientEvent(combiner_id=combiner_id, client_id=client_id, connected=connected)
        task = asyncio.ensure_future(controller.ReportClientEvent(event, timeout=10))
        background.add(task)
        task.add_done_callback(_forget(background))

    registry = ClientRegistry(max_clients, on_change=report)
    cache = ModelCache(
        workdir / "models",
        lambda model_id: controller.DownloadModel(pb.ModelRequest(model_id=model_id)),
    )
    rounds = RoundRunner(
        combiner_id,
        registry,
        cache,
        workdir / "updates",
        transfer_grace=options.transfer_grace_seconds,
        min_transfer_rate=options.min_transfer_rate,
    )
    service = CombinerServicer(registry, cache, rounds)
    server, bound = create_aio_server(
        f"{host}:{options.port}",
        interceptors=security.interceptors,
        credentials=security.server_credentials,
    )
    pb_grpc.add_CombinerServicer_to_server(service, server)
    await server.start()
    address = f"{host}:{bound}"
    await controller.RegisterCombiner(
        pb.CombinerInfo(combiner_id=combiner_id, address=address, max_clients=max_clients),
        timeout=30,
    )
    log.info("combiner %s serving on %s", combiner_id, address)
    if options.ready_file is not None:
        options.ready_file.write_text(address)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        with contextlib.suppress(grpc.aio.AioRpcError):
            beat = pb.CombinerHeartbeat(combiner_id=combiner_id, client_ids=registry.ids())
            ack = await controller.Heartbeat(beat, timeout=5)
            if enrolment.verifier is not None:
                enrolment.verifier.set_revoked(ack.revoked_token_ids)
                for client_id in registry.end_revoked(set(ack.revoked_token_ids)):
                    log.warning("ended the stream of %s: its token was revoked", client_id)
            if not ack.ok:  # the controller restarted and forgot us
                await controller.RegisterCombiner(
                    pb.CombinerInfo(
                        combiner_id=combiner_id, address=address, max_clients=max_clients
                    ),
                    timeout=5,
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
    await server.stop(grace=1)
    await channel.close()


def _forget(tasks: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("client event not delivered: %s", task.exception())

    return done
