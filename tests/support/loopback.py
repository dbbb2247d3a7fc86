"""The controller's real REST app served over loopback HTTP, in a thread, without processes.

Unlike the in-process ASGI transport (which reads every answer to its end), a real server
lets a test read a stream as it arrives and hang up on it, as a browser or `follow` does.
The controller's state store is real (SQLite in a temp folder); the test writes to it from
its own thread, and the live feed hands those events to the server's loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import uvicorn

from stratafl.controller.events import MAX_STREAMS, EventFeed
from stratafl.controller.rest.app import create_api
from tests.support.controllers import new_controller


class LoopbackAPI:
    """`create_api(controller)` on 127.0.0.1 (a free port) until `close`; `url` is its base.

    ``secure`` gives the controller a trust root (`tests.support.controllers`); ``tls``
    (with it) serves HTTPS with the controller's certificate, as `strata controller start`
    does by default.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        max_streams: int = MAX_STREAMS,
        secure: bool = False,
        tls: bool = False,
    ) -> None:
        events = EventFeed(max_streams=max_streams)
        self.controller = new_controller(workdir, secure=secure or tls, events=events)
        self.controller.store.open()
        trust = self.controller.trust
        certificate = {}
        if tls and trust is not None:
            certificate = {
                "ssl_certfile": str(trust.paths.cert),
                "ssl_keyfile": str(trust.paths.key),
            }
        config = uvicorn.Config(
            create_api(self.controller),
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            **certificate,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()))
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def close(self) -> None:
        self.controller.events.close()  # open streams end, so the server can stop
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.controller.store.close()
