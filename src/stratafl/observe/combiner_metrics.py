"""A combiner's Prometheus metrics: its links, clients, rounds, transfer slots and fold.

Counted where the combiner already measures things: each stream's bytes as they move (so
the counters agree with the round records' traffic), each task's outcome once when its
round closes, the collector's own byte and time counts. Served by
`stratafl.observe.metrics_server`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stratafl.errors import ModelFormatError, UpdateRejected
from stratafl.observe.metrics import (
    ROUND_SECONDS_BUCKETS,
    Direction,
    Link,
    link_bytes_counter,
    process_collectors,
)
from stratafl.status import OutcomeStatus, TaskKind

__all__ = ["CombinerMetrics", "CountingSemaphore", "FoldCounts", "Phase", "RejectReason"]


class RejectReason(StrEnum):
    """Why a combiner refused a client's answer (the label of the rejections counter)."""

    FORMAT = "format"  # ModelFormatError: layout or bytes not a valid model of the round
    CHECKS = "checks"  # UpdateRejected: NaN/Inf values, example count or metrics out of bounds
    SLOW = "slow"  # the upload gave up its transfer slot
    METRICS = "metrics"  # a validation report's metrics out of bounds
    RECEIPT = "receipt"  # the client's receipt does not verify with its public key

    @classmethod
    def of(cls, exc: BaseException) -> RejectReason:
        if isinstance(exc, ModelFormatError):
            return cls.FORMAT
        if isinstance(exc, UpdateRejected):
            return cls.CHECKS
        return cls.SLOW


class Phase(StrEnum):
    """Parts of a combiner's round timed apart from the fold (the label of phase seconds)."""

    FETCH = "fetch"  # the round's model, from the controller to this combiner's cache
    STAGE = "stage"  # clients' update bytes written to this combiner's disk as they arrive


class FoldCounts(Protocol):
    """What an aggregation collector counts (`stratafl.collect.collector.Collector`)."""

    @property
    def bytes_in(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def left_out(self) -> Mapping[str, str]: ...


class CountingSemaphore(asyncio.Semaphore):
    """An `asyncio.Semaphore` that knows how many holders it has (for a gauge)."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.capacity = value
        self.in_use = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1
        super().release()


class CombinerMetrics:
    """A combiner's metrics: its links, its clients, its rounds, its transfers, its fold."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        process_collectors(self.registry)
        self.link_bytes = link_bytes_counter(self.registry)
        self.outcomes = Counter(
            "stratafl_combiner_tasks",
            "Clients' tasks by kind (train, validate) and outcome when the round closed; "
            'outcome="ok" with kind="train" counts accepted updates',
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "stratafl_combiner_rejections",
            "Clients' updates and reports refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.round_seconds = Histogram(
            "stratafl_combiner_round_duration_seconds",
            "This combiner's share of a round: model fetched, tasks out, answers in, partial",
            ["kind"],
            buckets=ROUND_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.fold_bytes = Counter(
            "stratafl_combiner_fold_bytes",
            "Bytes of updates the aggregation rule took in (checked, folded or spooled)",
            registry=self.registry,
        )
        self.fold_seconds = Counter(
            "stratafl_combiner_fold_seconds",
            "Seconds spent checking and folding updates and making partials; "
            "rate(fold_bytes) / rate(fold_seconds) is the fold's throughput",
            registry=self.registry,
        )
        self.left_out = Counter(
            "stratafl_combiner_updates_left_out",
            "Accepted updates the round's rule left out of its partial (krum, multikrum, "
            "bulyan, flame): a defence at work, or honest clients it mistakes for attackers",
            registry=self.registry,
        )
        self.phase_seconds = Counter(
            "stratafl_combiner_phase_seconds",
            "Seconds spent fetching rounds' models from the controller (phase=fetch) and "
            "writing clients' updates to disk as they arrive (phase=stage)",
            ["phase"],
            registry=self.registry,
        )
        for phase in Phase:
            self.phase_seconds.labels(phase=phase.value)
        for link in (Link.CLIENT, Link.CONTROLLER):
            for direction in Direction:
                self.link_bytes.labels(link=link.value, direction=direction.value)
        for kind in TaskKind:
            for outcome in _CLOSED:
                self.outcomes.labels(kind=kind.value, outcome=outcome.value)
        for reason in RejectReason:
            self.rejected.labels(reason=reason.value)

    def watch(self, clients: Callable[[], int], transfers: CountingSemaphore) -> None:
        """Gauges read at each scrape: clients connected, transfer slots in use and held."""
        connected = Gauge(
            "stratafl_combiner_clients_connected",
            "Clients holding a task stream to this combiner",
            registry=self.registry,
        )
        connected.set_function(lambda: float(clients()))
        in_use = Gauge(
            "stratafl_combiner_transfers_in_use",
            "Transfer slots moving model bytes now (downloads and uploads)",
            registry=self.registry,
        )
        in_use.set_function(lambda: float(transfers.in_use))
        slots = Gauge(
            "stratafl_combiner_transfer_slots",
            "Transfer slots in all: streams beyond this wait for a slot",
            registry=self.registry,
        )
        slots.set(transfers.capacity)

    def received(self, link: Link, nbytes: int) -> None:
        self.link_bytes.labels(link=link.value, direction=Direction.IN.value).inc(nbytes)

    def sent(self, link: Link, nbytes: int) -> None:
        self.link_bytes.labels(link=link.value, direction=Direction.OUT.value).inc(nbytes)

    def counting(self, link: Link, add: Callable[[int], None]) -> Callable[[int], None]:
        """``add`` that also counts the bytes as received on ``link``."""

        def both(nbytes: int) -> None:
            add(nbytes)
            self.received(link, nbytes)

        return both

    def spent(self, phase: Phase, seconds: float) -> None:
        self.phase_seconds.labels(phase=phase.value).inc(seconds)

    def refused(self, reason: RejectReason) -> None:
        self.rejected.labels(reason=reason.value).inc()

    def round_closed(
        self,
        train: bool,
        outcomes: Iterable[OutcomeStatus],
        seconds: float,
        fold: FoldCounts | None = None,
    ) -> None:
        """One round's end: each task's outcome once, its duration, and what the rule
        took in (``fold``: None for a validation round)."""
        kind = (TaskKind.TRAIN if train else TaskKind.VALIDATE).value
        for outcome in outcomes:
            self.outcomes.labels(kind=kind, outcome=outcome.value).inc()
        self.round_seconds.labels(kind=kind).observe(seconds)
        if fold is not None:
            self.fold_bytes.inc(fold.bytes_in)
            self.fold_seconds.inc(fold.seconds)
            self.left_out.inc(len(fold.left_out))


_CLOSED = tuple(s for s in OutcomeStatus if s is not OutcomeStatus.PENDING)
