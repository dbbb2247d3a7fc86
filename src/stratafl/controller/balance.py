"""Evening the load: when a combiner joins or comes back, some clients move to it.

A client goes to the least-loaded combiner when it connects, and nothing moved it after
that: kill a combiner, its clients all move to the others, and when it comes back it
stays empty. So between rounds the controller compares each online combiner's clients
(those it assigned there: a combiner's own count could lie) with an even share
(`plan_moves`, a pure function) and asks the over-loaded ones to let some clients go
(the combiner's ``MoveClients``). Those clients' task streams end with a status that
tells them to ask ``/assign`` again, where discovery sends them to the emptiest combiner.
Clients placed on a combiner they asked for (`Discovery.assign`'s ``preferred``) are
never moved. A combiner never lets a client with a task in flight go,
and nothing more is asked while clients are still on their way from an earlier move.

`Rebalancer.before_round` is the round's hook: the round runner asks the federation to
even the load (`CombinerLinks.even_load`) at the start of every round, before it waits
for clients. The controller's sweep loop calls
`Rebalancer.kick` once a second while no session runs, so the next session starts even.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from stratafl.controller.discovery import Discovery
from stratafl.errors import UnavailableError

log = logging.getLogger("stratafl.controller")

SETTLE_SECONDS = 10.0
"""How long a moved client may take to connect elsewhere before it counts as gone."""


def even_shares(holding: Mapping[str, int], capacity: Mapping[str, int]) -> dict[str, int]:
    """How many clients each combiner should hold: the current total spread as evenly as
    each one's ``capacity`` allows (water-filling). A share one above the rest goes to a
    combiner that already holds more, so a spread within one of even moves nobody."""
    share = dict.fromkeys(holding, 0)
    left = sum(holding.values())
    room = [c for c in sorted(holding, key=lambda c: (-holding[c], c)) if capacity[c] > 0]
    while left > 0 and room:
        each, extra = divmod(left, len(room))
        for rank, combiner_id in enumerate(room):
            give = min(each + (rank < extra), capacity[combiner_id] - share[combiner_id])
            share[combiner_id] += give
            left -= give
        room = [c for c in room if share[c] < capacity[c]]
    return share


def plan_moves(
    holdings: Mapping[str, Collection[str]], capacity: Mapping[str, int]
) -> dict[str, list[str]]:
    """The clients each over-loaded combiner should let go, so that every combiner ends
    up with its even share (`even_shares`). Never more than the others have room for:
    clients over every combiner's capacity stay where they are. Which clients move is
    arbitrary but reproducible (the last ids in sorted order)."""
    holding = {c: len(ids) for c, ids in holdings.items()}
    share = even_shares(holding, capacity)
    room = sum(max(0, share[c] - holding[c]) for c in holding)
    moves: dict[str, list[str]] = {}
    for combiner_id in sorted(holding, key=lambda c: (share[c] - holding[c], c)):
        surplus = min(holding[combiner_id] - share[combiner_id], room)
        if surplus <= 0:
            break
        moves[combiner_id] = sorted(holdings[combiner_id])[-surplus:]
        room -= surplus
    return moves


class Mover(Protocol):
    """Asks a combiner to let clients go (the controller's link to its combiners)."""

    async def move_clients(self, combiner_id: str, client_ids: Sequence[str]) -> list[str]:
        """The clients whose streams were ended; raises `UnavailableError`."""
        ...


class Rebalancer:
    """Evens the load over the online combiners; constructing it starts nothing."""

    def __init__(
        self,
        discovery: Discovery,
        mover: Mover,
        *,
        settle_seconds: float = SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._discovery = discovery
        self._mover = mover
        self._settle = settle_seconds
        self._clock = clock
        self._moving: dict[str, float] = {}
        """Clients asked to move and not connected anywhere yet, with their deadline."""
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[int] | None = None
        self.moved = 0
        """Clients moved so far."""

    def in_transit(self) -> set[str]:
        """Moved clients that have not connected elsewhere (and still may)."""
        now = self._clock()
        self._moving = {
            client_id: deadline
            for client_id, deadline in self._moving.items()
            if deadline > now and self._discovery.combiner_of(client_id) is None
        }
        return set(self._moving)

    async def step(self) -> int:
        """Ask each over-loaded combiner to let its surplus go, unless clients are still
        on their way somewhere; returns how many clients were moved."""
        async with self._lock:
            if self.in_transit() or not self._discovery.settled():
                return 0
            online = self._discovery.online()
            # Loads are the controller's own assignments, never a combiner's report; placed
            # clients stay: only the others are evened around them.
            plan = plan_moves(
                {e.combiner_id: e.assigned - e.pinned for e in online},
                {e.combiner_id: e.max_clients - len(e.assigned & e.pinned) for e in online},
            )
            count = 0
            for combiner_id, client_ids in plan.items():
                try:
                    moved = await self._mover.move_clients(combiner_id, client_ids)
                except UnavailableError as exc:  # its heartbeats tell whether it is gone
                    log.warning("could not move clients off %s: %s", combiner_id, exc)
                    continue
                await self._discovery.clients_moved(combiner_id, moved)
                deadline = self._clock() + self._settle
                self._moving.update(dict.fromkeys(moved, deadline))
                count += len(moved)
            if count:
                log.info("moved %d clients to even the load", count)
            self.moved += count
            return count

    async def before_round(self) -> None:
        """Even the load, then wait (at most `SETTLE_SECONDS`) until the moved clients
        have connected elsewhere, so the round counts them where they are."""
        await self.step()
        await self._discovery.wait_until(lambda: not self.in_transit(), self._settle)

    def kick(self) -> None:
        """Run a `step` in the background unless one is running (the sweep loop's call)."""
        if self._background is None or self._background.done():
            self._background = asyncio.ensure_future(self.step())
            self._background.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._background is not None and not self._background.done():
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("rebalancing failed: %s", task.exception())
