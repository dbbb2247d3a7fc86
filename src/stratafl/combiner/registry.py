"""The clients connected to one combiner, each with the queue its task stream reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from stratafl.proto import stratafl_pb2 as pb


@dataclass(eq=False)
class ConnectedClient:
    client_id: str
    token_id: str | None = None
    """The token its stream was opened with (None on an insecure link)."""
    tasks: asyncio.Queue[pb.Task | None] = field(default_factory=asyncio.Queue)


class ClientRegistry:
    """Who is connected right now: one task stream per client identity."""

    def __init__(self, max_clients: int, on_change: Callable[[str, bool], None]) -> None:
        self.max_clients = max_clients
        self._clients: dict[str, ConnectedClient] = {}
        self._on_change = on_change

    def ids(self) -> list[str]:
        return sorted(self._clients)

    def is_full_for(self, client_id: str) -> bool:
        return client_id not in self._clients and len(self._clients) >= self.max_clients

    def is_connected(self, client_id: str) -> bool:
        return client_id in self._clients

    def connect(self, client_id: str, token_id: str | None = None) -> ConnectedClient:
        """Register a stream for ``client_id``; the caller checks `is_connected` first: a
        second stream for one identity is refused, never silently swapped in."""
        assert client_id not in self._clients, "one task stream per client"
        client = ConnectedClient(client_id, token_id)
        self._clients[client_id] = client
        self._on_change(client_id, True)
        return client

    def end_revoked(self, token_ids: Collection[str]) -> list[str]:
        """End the streams opened with a revoked token; returns those clients' ids."""
        ended = [c for c in self._clients.values() if c.token_id in token_ids]
        for client in ended:
            client.tasks.put_nowait(None)
        return [c.client_id for c in ended]

    def disconnect(self, client: ConnectedClient) -> bool:
        """Forget ``client``'s stream; True if it was the current one."""
        if self._clients.get(client.client_id) is not client:
            return False
        del self._clients[client.client_id]
        self._on_change(client.client_id, False)
        return True

    def sample(self, count: int, seed: int) -> list[ConnectedClient]:
        """``count`` distinct clients (all of them when count is 0), reproducible for a seed."""
        ids = self.ids()
        if 0 < count < len(ids):
            ids = random.Random(seed).sample(ids, count)
        return [self._clients[i] for i in ids]
