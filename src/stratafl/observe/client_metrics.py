"""A client's Prometheus metrics: its tasks (how many, how long, on how many examples),
its link to a combiner, its refusals. Served by `stratafl.observe.metrics_server` when the
client is started with ``--metrics-port``; fed by the client runtime's task hook and its
protocol counters (read at each scrape)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stratafl.observe.metrics import ROUND_SECONDS_BUCKETS, process_collectors

__all__ = ["ClientMetrics"]


class ClientMetrics:
    """One client process's metrics; constructing it serves nothing."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        process_collectors(self.registry)
        self.tasks = Counter(
            "stratafl_client_tasks",
            "Tasks this client finished, by kind (train, validate)",
            ["kind"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "stratafl_client_task_duration_seconds",
            "A task from its arrival to its answer: download, the app's work, upload",
            ["kind"],
            buckets=ROUND_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.examples = Counter(
            "stratafl_client_examples",
            "Examples the app reported training on, summed over its updates",
            registry=self.registry,
        )

    def watch(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Expose each of ``counts()``'s values (the protocol's counters) as a gauge
        ``stratafl_client_protocol_<name>``, read at each scrape."""
        for name in counts():
            gauge = Gauge(
                f"stratafl_client_protocol_{name}",
                f"The client protocol's count of {name.replace('_', ' ')}",
                registry=self.registry,
            )
            gauge.set_function(_reader(counts, name))

    def task_done(self, kind: str, examples: int, seconds: float) -> None:
        self.tasks.labels(kind).inc()
        self.task_seconds.labels(kind).observe(seconds)
        if kind == "train":
            self.examples.inc(examples)


def _reader(counts: Callable[[], Mapping[str, int]], name: str) -> Callable[[], float]:
    def read() -> float:
        return float(counts()[name])

    return read
