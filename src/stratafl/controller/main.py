"""The controller process: state store, model store, discovery, sessions, gRPC and REST."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import uvicorn

from stratafl.controller.api import create_api
from stratafl.controller.discovery import Discovery
from stratafl.controller.service import ControllerService, TrafficCounter
from stratafl.controller.sessions import SessionRunner
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore
from stratafl.transport.channels import INSECURE_LOOPBACK, LinkSecurity, create_aio_server

log = logging.getLogger("stratafl.controller")


class _QuietServer(uvicorn.Server):
    """Uvicorn without its own signal handlers: the controller's loop owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Controller:
    """The parts of tier 3, wired together; constructing it does no I/O."""

    def __init__(
        self,
        workdir: Path,
        database_url: str | None = None,
        model_store: str | None = None,
        channel_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.workdir = workdir
        self.store = StateStore(database_url or f"sqlite:///{workdir / 'state.db'}")
        self.models = ModelStore(model_store or workdir / "models")
        self.discovery = Discovery(self.store)
        self.traffic = TrafficCounter()
        self.sessions = SessionRunner(
            self.store, self.models, self.discovery, self.traffic, workdir, channel_credentials
        )
        self.grpc_address = ""


async def serve_controller(
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 8080,
    grpc_port: int = 0,
    database_url: str | None = None,
    model_store: str | None = None,
    ready_file: Path | None = None,
    security: LinkSecurity = INSECURE_LOOPBACK,
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    controller = Controller(workdir, database_url, model_store, security.channel_credentials)
    controller.store.open()
    for session_id in controller.store.fail_interrupted_sessions(
        "the controller stopped during the session; start a new session from its final model"
    ):
        log.warning("session %s was interrupted by a controller restart", session_id)
    server, bound = create_aio_server(
        f"{host}:{grpc_port}",
        interceptors=security.interceptors,
        credentials=security.server_credentials,
    )
    pb_grpc.add_ControllerServicer_to_server(
        ControllerService(controller.discovery, controller.models, controller.traffic), server
    )
    await server.start()
    controller.grpc_address = f"{host}:{bound}"
    config = uvicorn.Config(
        create_api(controller), host=host, port=http_port, log_level="warning", lifespan="off"
    )
    http = _QuietServer(config)
    serving = asyncio.ensure_future(http.serve())
    while not http.started:
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    http_bound = http.servers[0].sockets[0].getsockname()[1]
    url = f"http://{host}:{http_bound}"
    log.info("controller: REST %s, gRPC %s", url, controller.grpc_address)
    if ready_file is not None:
        ready_file.write_text(json.dumps({"url": url, "grpc_address": controller.grpc_address}))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        controller.discovery.sweep()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    http.should_exit = True
    await serving
    await server.stop(grace=1)
    controller.store.close()
