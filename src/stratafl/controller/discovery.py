"""Which combiners are alive, which clients each one holds, and who gets the next client.

A client asks for a combiner and gets the least-loaded online one under its
``max_clients``. Load counts connected clients plus clients just assigned that have not
connected yet, so a burst of clients spreads evenly before the first heartbeat arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stratafl.errors import UnavailableError
from stratafl.status import ClientStatus, CombinerStatus
from stratafl.store.state import StateStore

RESERVATION_SECONDS = 15.0
OFFLINE_AFTER_SECONDS = 5.0


@dataclass
class CombinerEntry:
    combiner_id: str
    address: str
    max_clients: int
    online: bool = True
    last_heartbeat: float = 0.0
    clients: set[str] = field(default_factory=set)
    reserved: dict[str, float] = field(default_factory=dict)

    def load(self, now: float) -> int:
        pending = {c for c, t in self.reserved.items() if now - t < RESERVATION_SECONDS}
        return len(self.clients | pending)


class Discovery:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._combiners: dict[str, CombinerEntry] = {}
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def register(self, combiner_id: str, address: str, max_clients: int) -> None:
        entry = self._combiners.get(combiner_id)
        if entry is None:
            entry = CombinerEntry(combiner_id, address, max_clients)
            self._combiners[combiner_id] = entry
        entry.address, entry.max_clients, entry.online = address, max_clients, True
        entry.last_heartbeat = self._clock()
        self._store.register_combiner(combiner_id, address, max_clients)
        self._store.add_event("combiner_registered", combiner_id, f"combiner at {address}")
        self._notify()

    def heartbeat(self, combiner_id: str, client_ids: list[str]) -> bool:
        """Record a heartbeat; False tells a combiner the controller does not know it."""
        entry = self._combiners.get(combiner_id)
        if entry is None:
            return False
        was_online = entry.online
        entry.online, entry.last_heartbeat = True, self._clock()
        if set(client_ids) != entry.clients:
            entry.clients = set(client_ids)
            self._notify()
        if not was_online:
            self._notify()
        self._store.combiner_heartbeat(combiner_id, client_ids)
        return True

    def client_event(self, combiner_id: str, client_id: str, connected: bool) -> None:
        entry = self._combiners.get(combiner_id)
        if entry is None:
            return
        entry.reserved.pop(client_id, None)
        if connected:
            for other in self._combiners.values():
                other.clients.discard(client_id)
            entry.clients.add(client_id)
        else:
            entry.clients.discard(client_id)
        status = ClientStatus.CONNECTED if connected else ClientStatus.DISCONNECTED
        self._store.set_client(client_id, combiner_id, status)
        self._notify()

    def mark_offline(self, combiner_id: str, reason: str) -> None:
        entry = self._combiners.get(combiner_id)
        if entry is None or not entry.online:
            return
        entry.online = False
        entry.clients.clear()
        entry.reserved.clear()
        self._store.set_combiner_status(combiner_id, CombinerStatus.OFFLINE)
        self._store.add_event("combiner_offline", combiner_id, reason)
        self._notify()

    def sweep(self) -> None:
        """Mark combiners whose heartbeats stopped as offline."""
        now = self._clock()
        for entry in list(self._combiners.values()):
            if entry.online and now - entry.last_heartbeat > OFFLINE_AFTER_SECONDS:
                self.mark_offline(entry.combiner_id, "no heartbeat")

    def assign(self, client_id: str, failed_combiner: str | None = None) -> CombinerEntry:
        if failed_combiner:
            self.mark_offline(failed_combiner, f"client {client_id} could not reach it")
        now = self._clock()
        candidates = [
            e for e in self._combiners.values() if e.online and e.load(now) < e.max_clients
        ]
        if not candidates:
            raise UnavailableError(
                "no combiner has room for another client; start one with `strata combiner start`"
            )
        best = min(candidates, key=lambda e: (e.load(now), e.combiner_id))
        for entry in self._combiners.values():
            entry.reserved.pop(client_id, None)
        best.reserved[client_id] = now
        self._store.set_client(client_id, best.combiner_id, ClientStatus.ASSIGNED)
        return best

    def online(self) -> list[CombinerEntry]:
        return [e for e in self._combiners.values() if e.online]

    def connected_clients(self) -> int:
        return sum(len(e.clients) for e in self.online())

    async def wait_for_clients(self, count: int, timeout: float) -> int:
        """Wait at most ``timeout`` s for ``count`` connected clients; returns how many are."""
        deadline = self._clock() + timeout
        while self.connected_clients() < count:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
        return self.connected_clients()
