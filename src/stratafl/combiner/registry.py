"""The clients connected to one combiner, each with the queue its task stream reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from stratafl.proto import stratafl_pb2 as pb


@dataclass(eq=False)
class ConnectedClient:
    client_id: str
    tasks: asyncio.Queue[pb.Task | None] = field(default_factory=asyncio.Queue)


class ClientRegistry:
    """Who is connected right now. A second stream for the same id replaces the first."""

    def __init__(self, max_clients: int, on_change: Callable[[str, bool], None]) -> None:
        self.max_clients = max_clients
        self._clients: dict[str, ConnectedClient] = {}
        self._on_change = on_change

    def ids(self) -> list[str]:
        return sorted(self._clients)

    def is_full_for(self, client_id: str) -> bool:
        return client_id not in self._clients and len(self._clients) >= self.max_clients

    def connect(self, client_id: str) -> ConnectedClient:
        old = self._clients.get(client_id)
        if old is not None:
            old.tasks.put_nowait(None)  # ends the old stream
        client = ConnectedClient(client_id)
        self._clients[client_id] = client
        self._on_change(client_id, True)
        return client

    def disconnect(self, client: ConnectedClient) -> bool:
        """Forget ``client`` unless a newer stream replaced it; True if it was current."""
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
