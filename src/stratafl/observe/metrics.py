"""The Prometheus metrics of the controller, and what every process's metrics share.

Each process builds one `ControllerMetrics` or `CombinerMetrics` (in
`stratafl.observe.combiner_metrics`) and hands it to the parts that count; nothing is
registered in prometheus-client's global registry, so two federations in one test
process never add to each other's counters. Labels take values
from closed sets only (enums, link names), so no peer can grow the number of series.

Bytes are counted where the transport already measures each stream (a message's
serialized size), once: at a combiner as they move, at the controller from each round's
recorded `Traffic`, so the counters and the round records agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from stratafl.records import RoundRecord
from stratafl.status import RoundStatus, SessionStatus

__all__ = [
    "CONTENT_TYPE",
    "ROUND_SECONDS_BUCKETS",
    "ControllerMetrics",
    "Direction",
    "Link",
    "exposition",
    "link_bytes_counter",
    "process_collectors",
]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text exposition format 0.0.4, which every Prometheus version reads (the names
are plain: no UTF-8 escaping is needed)."""

ROUND_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Link(StrEnum):
    """The peer at the other end of the bytes counted."""

    CLIENT = "client"
    COMBINER = "combiner"
    CONTROLLER = "controller"


class Direction(StrEnum):
    """Seen from the process that counts: ``in`` it received, ``out`` it sent."""

    IN = "in"
    OUT = "out"


def exposition(registry: CollectorRegistry) -> bytes:
    """What a scrape of ``registry`` answers (call it on the thread that owns the parts
    its callbacks read: the event loop)."""
    return generate_latest(registry)


def process_collectors(registry: CollectorRegistry) -> None:
    """CPU, memory, open files, start time, Python version and GC: free with the client."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def link_bytes_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "stratafl_link_bytes",
        "Serialized bytes this process received (in) or sent (out) on the link to a tier",
        ["link", "direction"],
        registry=registry,
    )


class ControllerMetrics:
    """The controller's metrics; a `SessionWatcher` fed by the session loop."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        process_collectors(self.registry)
        self.rounds = Counter(
            "stratafl_rounds",
            "Rounds recorded, by status (a failed round runs again with the same number)",
            ["status"],
            registry=self.registry,
        )
        self.round_seconds = Histogram(
            "stratafl_round_duration_seconds",
            "Wall time of a round at the controller, from waiting for clients to validation",
            buckets=ROUND_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.sessions = Counter(
            "stratafl_sessions_ended",
            "Sessions that ended, by status",
            ["status"],
            registry=self.registry,
        )
        self.link_bytes = link_bytes_counter(self.registry)
        for status in RoundStatus:  # every series exists from the start: rate() sees 0 -> 1
            self.rounds.labels(status=status.value)
        for ended in SessionStatus:
            if ended is not SessionStatus.RUNNING:
                self.sessions.labels(status=ended.value)
        for direction in Direction:
            self.link_bytes.labels(link=Link.COMBINER.value, direction=direction.value)

    def watch_federation(
        self, sessions_running: Callable[[], int], combiner_clients: Callable[[], Mapping[str, int]]
    ) -> None:
        """Gauges read at each scrape: sessions running, and each online combiner's clients
        as its last heartbeat told (one series per combiner, gone when it goes offline)."""
        running = Gauge("stratafl_sessions_running", "Sessions running now", registry=self.registry)
        running.set_function(lambda: float(sessions_running()))
        self.registry.register(_CombinerClients(combiner_clients))

    def round_recorded(self, record: RoundRecord) -> None:
        self.rounds.labels(status=record.status.value).inc()
        self.round_seconds.observe(record.duration)
        traffic = record.traffic
        self.link_bytes.labels(link=Link.COMBINER.value, direction=Direction.IN.value).inc(
            traffic.combiners_up
        )
        self.link_bytes.labels(link=Link.COMBINER.value, direction=Direction.OUT.value).inc(
            traffic.combiners_down
        )

    def session_ended(self, session_id: str, status: SessionStatus, reason: str) -> None:
        self.sessions.labels(status=status.value).inc()


class _CombinerClients:
    """``stratafl_combiner_clients{combiner}`` at the controller, read from discovery."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "stratafl_combiner_clients",
            "Clients connected to each online combiner, as its heartbeats report",
            labels=["combiner"],
        )
        online = self._read()
        for combiner_id, clients in sorted(online.items()):
            gauge.add_metric([combiner_id], float(clients))
        count = GaugeMetricFamily("stratafl_combiners_online", "Combiners online now")
        count.add_metric([], float(len(online)))
        return [gauge, count]

    def describe(self) -> Iterable[Metric]:
        return []
