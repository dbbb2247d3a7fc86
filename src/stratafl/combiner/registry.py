"""The clients connected to one combiner, each with the queue its task stream reads."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from stratafl.proto import stratafl_pb2 as pb


class StreamEnd(enum.Enum):
    """Why the combiner ends a client's task stream (put on its queue after any task)."""

    REVOKED = "revoked"
    """Its token was revoked: the stream closes, and a new one is refused."""
    MOVED = "moved"
    """The controller evens the load: the client asks it for a combiner again."""


@dataclass(eq=False)
class ConnectedClient:
    client_id: str
    token_id: str | None = None
    """The token its stream was opened with (None on an insecure link)."""
    tasks: asyncio.Queue[pb.Task | StreamEnd] = field(default_factory=asyncio.Queue)


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
            client.tasks.put_nowait(StreamEnd.REVOKED)
        return [c.client_id for c in ended]

    def move(self, client_ids: Iterable[str], busy: Collection[str]) -> list[str]:
        """End the streams of ``client_ids`` so those clients ask the controller for a
        combiner again; a client in ``busy`` (a task in flight) or not connected stays.

        A moved client leaves the registry now, not when its stream winds down: no round
        can sample it in between, and it may open a new stream here at once.
        """
        moved = []
        for client_id in dict.fromkeys(client_ids):
            client = self._clients.get(client_id)
            if client is None or client_id in busy:
                continue
            client.tasks.put_nowait(StreamEnd.MOVED)
            self.disconnect(client)
            moved.append(client_id)
        return moved

    def disconnect(self, client: ConnectedClient) -> bool:
        """Forget ``client``'s stream; True if it was the current one."""
        if self._clients.get(client.client_id) is not client:
            return False
        del self._clients[client.client_id]
        self._on_change(client.client_id, False)
        return True

    def get(self, client_id: str) -> ConnectedClient | None:
        """``client_id``'s stream, if it is connected."""
        return self._clients.get(client_id)
