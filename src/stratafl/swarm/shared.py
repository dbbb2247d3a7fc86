"""What the clients of one swarm process share: read-only, built once per process.

Thousands of clients in one process stay light because everything that is not theirs is
here: the app (one instance, unless each client needs its own data), the TLS credentials,
one pooled HTTP client for assignments (each request carries its client's own token), and
the last downloaded models. A client keeps only its identity and its backoff.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import httpx

from stratafl.client.app import ClientApp, Config, TrainResult
from stratafl.errors import StrataError
from stratafl.params import Params
from stratafl.restapi.schema import Assignment, AssignRequest
from stratafl.restapi.wire import authorization, error_of, reaching
from stratafl.swarm.identities import Identity
from stratafl.swarm.stats import SwarmStats

__all__ = ["ASSIGN_TIMEOUT_SECONDS", "ModelShelf", "ProcessShared"]

ASSIGN_TIMEOUT_SECONDS = 30.0
SHELF_MODELS = 2
"""Models kept per process: the round's and the one before (a late validation task)."""


class ModelShelf:
    """The last models a process downloaded, by id: what `ClientRuntime`'s one-model
    cache is, kept once per process instead of once per client."""

    def __init__(self, size: int = SHELF_MODELS) -> None:
        self._size = size
        self._models: OrderedDict[str, Params] = OrderedDict()

    def get(self, model_id: str) -> Params | None:
        return self._models.get(model_id)

    def put(self, model_id: str, params: Params) -> None:
        self._models[model_id] = params
        self._models.move_to_end(model_id)
        while len(self._models) > self._size:
            self._models.popitem(last=False)


class ProcessShared:
    """One swarm process's shared state; building it does no I/O (`open` does)."""

    def __init__(
        self,
        *,
        controller: str,
        apps: Callable[[int], ClientApp],
        ca_pem: bytes | None,
        connecting: int,
        stats: SwarmStats,
    ) -> None:
        self.controller = controller.rstrip("/")
        self._apps = apps
        self._ca_pem = ca_pem
        self.connecting = asyncio.Semaphore(connecting)
        """Clients asking for a combiner and opening a stream at the same time."""
        self.stats = stats
        self.shelf = ModelShelf()
        self.channel_credentials: grpc.ChannelCredentials | None = (
            None if ca_pem is None else grpc.ssl_channel_credentials(root_certificates=ca_pem)
        )
        self._http: httpx.AsyncClient | None = None

    def open(self, pool: int) -> None:
        verify: ssl.SSLContext | bool = True
        if self._ca_pem is not None:
            verify = ssl.create_default_context(cadata=self._ca_pem.decode())
        self._http = httpx.AsyncClient(
            base_url=f"{self.controller}/api/v1",
            timeout=ASSIGN_TIMEOUT_SECONDS,
            verify=verify,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def assign(self, identity: Identity, failed_combiner: str | None) -> Assignment:
        """``POST /assign`` as ``identity`` (its own token): the combiner to connect to."""
        if self._http is None:
            raise StrataError("the swarm process is not open: call open() first")
        body = AssignRequest(client_id=identity.client_id, failed_combiner=failed_combiner)
        with reaching(self.controller):
            response = await self._http.post(
                "/assign", json=body.model_dump(), headers=authorization(identity.token)
            )
        if response.is_error:
            raise error_of(response)
        return Assignment.model_validate_json(response.content)

    async def train(self, index: int, params: Params, config: Config) -> TrainResult:
        """Client ``index``'s app trains in a worker thread: user code may block."""
        return await asyncio.to_thread(self._apps(index).train, params, config)

    async def validate(self, index: int, params: Params, config: Config) -> Mapping[str, float]:
        return await asyncio.to_thread(self._apps(index).validate, params, config)


def app_table(apps: Sequence[ClientApp]) -> Callable[[int], Any]:
    """Client index -> its app: one app for all, or one per client."""
    if len(apps) == 1:
        only = apps[0]
        return lambda _index: only
    return apps.__getitem__
