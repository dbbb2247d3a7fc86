"""Which combiners are alive, which clients each one holds, and who gets the next client.

A client asks for a combiner and gets the least-loaded online one under its
``max_clients``, or the one it prefers (a placement) while that one is online and has
room: a preference never overfills a combiner, and a placed client is *pinned* (the
rebalancer leaves it where it asked to be). A combiner's load is the clients the
controller assigned to it (its own record, kept in the store and recalled at a restart by
`recall_assignments`), never what the combiner reports: a combiner that heartbeats an
empty list keeps its clients counted and attracts no more. A client takes part in rounds
on the combiner it was assigned to only, and only while that combiner says it is connected
(`eligible`).
A new controller process knows no combiner until it registers again (`forget_stored`),
and the rebalancer (`controller.balance`) moves clients off over-loaded combiners.

Decisions are made in memory, on the event loop, at once; what they change is recorded in
the state store off the loop (`OffLoop.write`: one writer thread, in the order decided).
Each method submits its writes before it first awaits, so a heartbeat and the sweep that
marks that combiner offline reach the database in the order they happened, and the
caller's ``await`` ends when its records are written (a slow database slows the callers
down instead of letting writes pile up).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from stratafl.controller.sent_models import SentModels
from stratafl.errors import UnavailableError
from stratafl.status import ClientStatus, CombinerStatus
from stratafl.store.protocols import DiscoveryRecords

RESERVATION_SECONDS = 15.0
OFFLINE_AFTER_SECONDS = 5.0
FRESH_SECONDS = 2.5
"""A combiner heartbeats every second: one silent for longer may be gone."""
SEEN_REFRESH_SECONDS = 30.0
"""How often the clients' ``last_seen`` rows are all rewritten. In between, a heartbeat
writes only the clients that joined since the last one: at 10,000 clients per combiner,
rewriting every row every second was a third of the controller's time."""


@dataclass
class CombinerEntry:
    combiner_id: str
    address: str
    max_clients: int
    online: bool = True
    last_heartbeat: float = 0.0
    clients: set[str] = field(default_factory=set)
    reserved: dict[str, float] = field(default_factory=dict)
    reported_by: set[str] = field(default_factory=set)
    """Clients that reported this registration unreachable: each counts once."""
    heard: bool = False
    """A heartbeat came since it registered: its list of clients is known."""
    pinned: set[str] = field(default_factory=set)
    """Clients assigned here because they asked for this combiner: the rebalancer leaves
    them be. Never more than its clients and reservations (cleared with them)."""
    seen_written: float = -math.inf
    """When every client's ``last_seen`` was last written to the store."""
    assigned: set[str] = field(default_factory=set)
    """Clients the controller assigned here (and not elsewhere since): its load."""

    def load(self, but: str = "") -> int:
        """The controller's count of this combiner's clients (``but`` that one), whatever
        the combiner reports."""
        return len(self.assigned) - (but in self.assigned)

    def eligible(self) -> set[str]:
        """Clients assigned here that the combiner says are connected."""
        return self.clients & self.assigned

    def on_the_way(self, now: float) -> bool:
        """Some client was assigned here lately and has not connected yet."""
        return any(
            now - t < RESERVATION_SECONDS and c not in self.clients
            for c, t in self.reserved.items()
        )


class Discovery:
    def __init__(
        self, store: DiscoveryRecords, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._clock = clock
        self._combiners: dict[str, CombinerEntry] = {}
        self._assigned: dict[str, str] = {}
        """client id -> the combiner the controller last assigned it to."""
        self._changed = asyncio.Event()
        self.sent_models = SentModels()
        self._owners: dict[str, str] | None = None
        """Address -> the combiner id registered there (online or not), from the store."""
        self._owners_loading = asyncio.Lock()
        """The models of the rounds sent to each combiner: all it may download here."""

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def owner_of(self, address: str) -> str | None:
        """The combiner id ``address`` belongs to: the one registered at it, online or
        offline (the state store's combiners table keeps each id's address, so it holds
        across controller restarts). While an owner restarts, nobody else takes its
        address; the owner gets it back at once. An address is released when its owner
        registers somewhere else."""
        if self._owners is None:
            async with self._owners_loading:
                if self._owners is None:
                    stored = await self._store.off_loop.read(self._store.combiners)
                    owners: dict[str, str] = {}
                    for record in sorted(stored, key=lambda c: c.registered_at):
                        owners.setdefault(record.address, record.id)
                    for entry in self._combiners.values():  # registered meanwhile
                        owners[entry.address] = entry.combiner_id
                    self._owners = owners
        return self._owners.get(address)

    def _claim(self, combiner_id: str, address: str) -> None:
        """Record that ``address`` now belongs to ``combiner_id`` (and its old one is free)."""
        if self._owners is None:
            return  # loaded from the store, where `register` writes it, when first asked
        for held in [a for a, owner in self._owners.items() if owner == combiner_id]:
            del self._owners[held]
        self._owners[address] = combiner_id

    async def register(self, combiner_id: str, address: str, max_clients: int) -> None:
        """Record ``combiner_id`` online at ``address``; the caller checks first that the
        address is not another's (`owner_of`)."""
        self._claim(combiner_id, address)
        entry = self._combiners.get(combiner_id)
        if entry is None:
            entry = CombinerEntry(combiner_id, address, max_clients)
            entry.assigned = {c for c, to in self._assigned.items() if to == combiner_id}
            self._combiners[combiner_id] = entry
        entry.address, entry.max_clients, entry.online = address, max_clients, True
        entry.last_heartbeat = self._clock()
        entry.clients.clear()  # a new registration is a new process: nothing carries over
        entry.reserved.clear()
        entry.reported_by.clear()
        entry.pinned.clear()
        entry.heard, entry.seen_written = False, -math.inf
        self._notify()
        write = self._store.off_loop.write
        await asyncio.gather(
            write(self._store.register_combiner, combiner_id, address, max_clients),
            write(
                self._store.add_event, "combiner_registered", combiner_id, f"combiner at {address}"
            ),
        )

    async def heartbeat(self, combiner_id: str, client_ids: list[str]) -> bool:
        """Record a heartbeat; False tells a combiner the controller does not know it."""
        entry = self._combiners.get(combiner_id)
        if entry is None:
            return False
        was_online, now = entry.online, self._clock()
        entry.online, entry.last_heartbeat, entry.heard = True, now, True
        held = set(client_ids)
        joined = held - entry.clients
        if held != entry.clients:
            entry.clients = held
            self._notify()
        if not was_online:
            self._notify()
        write = self._store.off_loop.write
        # Only clients assigned here are recorded as its own: a combiner's word never
        # moves another combiner's client in the store (where assignments are recalled).
        if now - entry.seen_written >= SEEN_REFRESH_SECONDS or not was_online:
            entry.seen_written = now
            ours = sorted(held & entry.assigned)
            await write(self._store.combiner_heartbeat, combiner_id, ours, num_clients=len(held))
        else:
            ours = sorted(joined & entry.assigned)
            await write(self._store.combiner_heartbeat, combiner_id, ours, num_clients=len(held))
        return True

    async def client_event(self, combiner_id: str, client_id: str, connected: bool) -> None:
        entry = self._combiners.get(combiner_id)
        if entry is None:
            return
        entry.reserved.pop(client_id, None)
        ours = client_id in entry.assigned
        if connected:
            if ours:  # another combiner's claim to it is stale (or false)
                for other in self._combiners.values():
                    other.clients.discard(client_id)
            entry.clients.add(client_id)
        else:
            entry.clients.discard(client_id)
            entry.pinned.discard(client_id)
            if self.combiner_of(client_id) is not None:  # a late event: it moved already
                self._notify()
                return
        status = ClientStatus.CONNECTED if connected else ClientStatus.DISCONNECTED
        self._notify()
        if ours:
            await self._store.off_loop.write(self._store.set_client, client_id, combiner_id, status)

    async def clients_moved(self, combiner_id: str, client_ids: Collection[str]) -> None:
        """``combiner_id`` let ``client_ids`` go to even the load: they no longer count
        towards its load, so their next assignment goes elsewhere."""
        entry = self._combiners.get(combiner_id)
        if entry is None or not client_ids:
            return
        entry.clients.difference_update(client_ids)
        self._notify()
        await self._store.off_loop.write(
            self._store.add_event,
            "clients_moved",
            combiner_id,
            f"{len(client_ids)} clients asked to move to even the load",
            clients=sorted(client_ids)[:100],
        )

    def combiner_of(self, client_id: str) -> str | None:
        """The online combiner ``client_id`` was assigned to and is connected to, if any."""
        entry = self._combiners.get(self._assigned.get(client_id, ""))
        if entry is not None and entry.online and client_id in entry.clients:
            return entry.combiner_id
        return None

    def assigned(self, combiner_id: str) -> frozenset[str]:
        """The clients the controller assigned to ``combiner_id`` (its own record)."""
        entry = self._combiners.get(combiner_id)
        return frozenset(entry.assigned) if entry is not None else frozenset()

    async def recall_assignments(self) -> int:
        """Load the assignments a previous controller process recorded in the store (each
        client's last combiner), so loads and round selection survive a restart; returns
        how many. Call it before combiners register."""
        stored = await self._store.off_loop.read(self._store.clients)
        for client in stored:
            if client.combiner_id is not None:
                self._place(client.id, client.combiner_id)
        return len(self._assigned)

    def _place(self, client_id: str, combiner_id: str) -> None:
        """Record that ``client_id`` is now assigned to ``combiner_id`` only."""
        before = self._combiners.get(self._assigned.get(client_id, ""))
        if before is not None:
            before.assigned.discard(client_id)
        self._assigned[client_id] = combiner_id
        entry = self._combiners.get(combiner_id)
        if entry is not None:
            entry.assigned.add(client_id)

    def settled(self) -> bool:
        """True when nothing is in doubt: no client is on its way to a combiner (assigned,
        not yet connected), and every online combiner heartbeated lately and since it
        registered (so its list of clients is known, not merely empty)."""
        now = self._clock()
        return all(
            e.heard and not e.on_the_way(now) and now - e.last_heartbeat <= FRESH_SECONDS
            for e in self.online()
        )

    async def forget_stored(self, reason: str) -> list[str]:
        """Mark the combiners the store still calls online as offline (their clients as
        disconnected). A new controller process knows no combiner until it registers with
        this process: without this, ``/combiners`` would show a dead process online."""
        stored = await self._store.off_loop.read(self._store.combiners)
        stale = [c.id for c in stored if c.status == CombinerStatus.ONLINE]
        await asyncio.gather(*(w for c in stale for w in self._record_offline(c, reason)))
        return stale

    async def mark_offline(self, combiner_id: str, reason: str) -> None:
        await asyncio.gather(*self._take_offline(combiner_id, reason))

    def _take_offline(self, combiner_id: str, reason: str) -> list[Awaitable[object]]:
        """Take an online combiner offline in memory now; returns the writes of its
        records, already submitted (none for an unknown or offline combiner)."""
        entry = self._combiners.get(combiner_id)
        if entry is None or not entry.online:
            return []
        entry.online = False
        entry.clients.clear()
        entry.reserved.clear()
        entry.pinned.clear()
        self._notify()
        return self._record_offline(combiner_id, reason)

    def _record_offline(self, combiner_id: str, reason: str) -> list[Awaitable[object]]:
        write = self._store.off_loop.write
        return [
            write(self._store.set_combiner_status, combiner_id, CombinerStatus.OFFLINE),
            write(self._store.add_event, "combiner_offline", combiner_id, reason),
        ]

    async def sweep(self) -> None:
        """Mark combiners whose heartbeats stopped as offline."""
        now = self._clock()
        silent = [
            entry.combiner_id
            for entry in self._combiners.values()
            if entry.online and now - entry.last_heartbeat > OFFLINE_AFTER_SECONDS
        ]
        await asyncio.gather(*(w for c in silent for w in self._take_offline(c, "no heartbeat")))

    async def assign(
        self, client_id: str, failed_combiner: str | None = None, *, preferred: str | None = None
    ) -> CombinerEntry:
        """The least-loaded online combiner with room, other than one the client could not
        reach. A client's report that its combiner is unreachable marks it offline only if
        the client was assigned to (or connected to) that very registration, and only once
        per client: a stale or hostile report cannot take a healthy combiner down.

        ``preferred`` wins while it is online, has room (counting this client's own
        reservation there as free) and is not ``failed_combiner``; the client is then
        pinned there. An unknown, full or offline preference is ignored, not an error."""
        offline: list[Awaitable[object]] = []
        if failed_combiner and self._counts_as_failure(failed_combiner, client_id):
            offline = self._take_offline(failed_combiner, f"client {client_id} could not reach it")
        now = self._clock()
        candidates = [
            e
            for e in self._combiners.values()
            if e.online and e.load(client_id) < e.max_clients and e.combiner_id != failed_combiner
        ] or [e for e in self._combiners.values() if e.online and e.load(client_id) < e.max_clients]
        if not candidates:
            await asyncio.gather(*offline)
            raise UnavailableError(
                "no combiner has room for another client; start one with `strata combiner start`"
            )
        best = min(candidates, key=lambda e: (e.load(client_id), e.combiner_id))
        wanted = self._combiners.get(preferred) if preferred else None
        if (
            wanted is not None
            and wanted.combiner_id != failed_combiner
            and self._has_room_for(wanted, client_id)
        ):
            best = wanted
        for entry in self._combiners.values():
            entry.reserved.pop(client_id, None)
            entry.pinned.discard(client_id)
        if best is wanted:
            best.pinned.add(client_id)
        best.reserved[client_id] = now
        self._place(client_id, best.combiner_id)
        assigned = self._store.off_loop.write(
            self._store.set_client, client_id, best.combiner_id, ClientStatus.ASSIGNED
        )
        await asyncio.gather(*offline, assigned)
        return best

    def holding(self, client_id: str, combiner_id: str) -> CombinerEntry | None:
        """``combiner_id``'s entry if it is online and ``client_id`` is connected to it (or
        was just assigned there): where a client renewing its ticket may stay. The
        controller's own assignment decides, never the combiner's report."""
        entry = self._combiners.get(combiner_id)
        if entry is None or not entry.online or self._assigned.get(client_id) != combiner_id:
            return None
        return entry

    @staticmethod
    def _has_room_for(entry: CombinerEntry, client_id: str) -> bool:
        """``entry`` is online and has room for ``client_id`` (which may hold a place there)."""
        return entry.online and entry.load(client_id) < entry.max_clients

    def _counts_as_failure(self, combiner_id: str, client_id: str) -> bool:
        entry = self._combiners.get(combiner_id)
        if entry is None or not entry.online or client_id in entry.reported_by:
            return False
        if client_id not in entry.clients and client_id not in entry.reserved:
            return False
        entry.reported_by.add(client_id)
        return True

    def online(self) -> list[CombinerEntry]:
        return [e for e in self._combiners.values() if e.online]

    def connected_clients(self) -> int:
        """Clients that can take part in a round: connected where they were assigned."""
        return sum(len(e.eligible()) for e in self.online())

    async def wait_for_clients(self, count: int, timeout: float) -> int:
        """Wait at most ``timeout`` s for ``count`` connected clients; returns how many are."""
        await self.wait_until(lambda: self.connected_clients() >= count, timeout)
        return self.connected_clients()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait at most ``timeout`` s for ``predicate`` to hold, re-checking it whenever
        discovery changes (no polling); returns whether it holds."""
        deadline = self._clock() + timeout
        while not predicate():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True
