"""Transfers per client identity: one client cannot take every slot that moves model bytes.

The combiner bounds the transfers that move bytes at once (`CombinerRoundRunner.transfers`);
without a bound per identity, one client that opens many downloads and never reads them
holds every slot and the honest clients of the round wait until they time out. A client
needs one transfer at a time (its task's model, then its update); a small allowance covers
a retry whose predecessor has not been cut yet.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

TRANSFERS_PER_CLIENT = 2
"""Downloads and uploads one client identity may have open at once, together."""


class TooManyTransfers(Exception):
    """The caller already has its share of transfers open (the servicer answers
    RESOURCE_EXHAUSTED with this message)."""


class TransferLimits:
    """Counts each identity's open transfers, from the request on: a transfer that waits for
    one of the combiner's shared slots counts too, so no identity can queue many waiters."""

    def __init__(self, per_client: int = TRANSFERS_PER_CLIENT) -> None:
        self.per_client = per_client
        self._open: Counter[str] = Counter()

    def open_for(self, client_id: str) -> int:
        return self._open[client_id]

    @contextlib.contextmanager
    def hold(self, client_id: str) -> Iterator[None]:
        """One transfer of ``client_id`` for the block; raises `TooManyTransfers` when it
        has ``per_client`` open already."""
        if self._open[client_id] >= self.per_client:
            raise TooManyTransfers(
                f"client {client_id!r} already has {self.per_client} model transfers open "
                "here; finish or cancel one before opening another"
            )
        self._open[client_id] += 1
        try:
            yield
        finally:
            self._open[client_id] -= 1
            if not self._open[client_id]:
                del self._open[client_id]
