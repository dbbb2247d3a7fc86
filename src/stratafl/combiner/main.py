"""Run a combiner: serve clients and the controller, register, heartbeat, report clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc.aio

from stratafl.api import ControllerClient
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import RoundRunner
from stratafl.combiner.servicer import CombinerServicer
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.transport.channels import (
    INSECURE_LOOPBACK,
    LinkSecurity,
    create_aio_server,
    open_aio_channel,
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


def discover_controller(controller_url: str, timeout: float = 30.0) -> str:
    """The controller's gRPC address, asked of its REST API."""
    with ControllerClient(controller_url, timeout=timeout) as controller:
        return controller.discovery().grpc_address


async def serve_combiner(
    options: CombinerOptions, *, security: LinkSecurity = INSECURE_LOOPBACK
) -> None:
    """Serve until SIGTERM or SIGINT."""
    host, max_clients, workdir = options.host, options.max_clients, options.workdir
    combiner_id = options.combiner_id or f"combiner-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    controller_address = await asyncio.to_thread(discover_controller, options.controller)
    channel = open_aio_channel(controller_address, credentials=security.channel_credentials)
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
    rounds = RoundRunner(combiner_id, registry, cache, workdir / "updates")
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


def _forget(tasks: set[asyncio.Task[object]]):  # type: ignore[no-untyped-def]
    def done(task: asyncio.Task[object]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("client event not delivered: %s", task.exception())

    return done
