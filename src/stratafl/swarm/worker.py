"""One swarm process: its share of the fleet's clients on one asyncio event loop.

The fleet (`stratafl.swarm.fleet`) starts each as ``python -m stratafl.swarm SPEC``,
where SPEC is a JSON `WorkerSpec` file; the process's identities (with their tokens) come
from a private file the spec names, never from its command line. It writes its counters
to ``stats_file`` every second and stops on SIGTERM or SIGINT (or after ``duration``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from stratafl.client.app import ClientApp, ClientContext, load_app
from stratafl.client.state import ClientState
from stratafl.logs import configure_logging
from stratafl.machine import raise_open_files_limit
from stratafl.security.files import read_pem
from stratafl.swarm.identities import Identity, from_lines
from stratafl.swarm.shared import app_table, process_protocol
from stratafl.swarm.stats import SwarmStats, peak_rss_bytes, rss_bytes

__all__ = ["STATS_SECONDS", "WorkerSpec", "run_worker"]

log = logging.getLogger("stratafl.swarm")

STATS_SECONDS = 1.0


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What one swarm process runs: written by the fleet as JSON."""

    controller: str
    app: str
    identities_file: str
    """``client_id<TAB>token`` lines, owner-only; deleted by the fleet when it ends."""
    first_index: int
    """This process's first client's place in the fleet (its partition id)."""
    total_clients: int
    stats_file: str
    ca_file: str | None = None
    app_per_client: bool = False
    connecting: int = 200
    seed: int = 0
    duration: float | None = None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        return cls(**json.loads(path.read_text()))


def build_apps(spec: WorkerSpec, identities: list[Identity]) -> list[ClientApp]:
    """One app for the whole process, or one per client (each its own partition)."""

    def context(offset: int, client_id: str) -> ClientContext:
        return ClientContext(
            client_id=client_id,
            partition_id=spec.first_index + offset,
            num_partitions=spec.total_clients,
            seed=spec.seed,
        )

    if spec.app_per_client:
        return [load_app(spec.app, context(i, x.client_id)) for i, x in enumerate(identities)]
    return [load_app(spec.app, context(0, identities[0].client_id))]


async def run_worker(spec: WorkerSpec, stop: asyncio.Event) -> SwarmStats:
    """Run the spec's clients until ``stop`` is set (or ``duration`` passed); returns the
    final counters."""
    identities = from_lines(Path(spec.identities_file).read_text(encoding="ascii"))
    stats = SwarmStats(clients=len(identities), baseline_rss_bytes=rss_bytes())
    apps = build_apps(spec, identities)
    ca_pem = None if spec.ca_file is None else read_pem(Path(spec.ca_file), "the CA certificate")
    protocol = process_protocol(
        controller=spec.controller, ca_pem=ca_pem, connecting=spec.connecting, stats=stats
    )
    app_of = app_table(apps)
    rng = random.Random(spec.seed * 7919 + spec.first_index)
    clients = [
        ClientState(x.client_id, app_of(i), token=x.token, rng=rng)
        for i, x in enumerate(identities)
    ]
    stats_path = Path(spec.stats_file)
    async with protocol.assigner:
        tasks = [asyncio.create_task(protocol.run(client)) for client in clients]
        try:
            await _until_stopped(stop, spec.duration, tasks, stats, stats_path)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    stats.rss_bytes = peak_rss_bytes()
    stats.write(stats_path)
    return stats


async def _until_stopped(
    stop: asyncio.Event,
    duration: float | None,
    tasks: list[asyncio.Task[None]],
    stats: SwarmStats,
    path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    while not stop.is_set():
        stats.rss_bytes = peak_rss_bytes()
        stats.write(path)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception() or RuntimeError("unreachable")  # a client's fatal error
        wait = STATS_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                return
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except TimeoutError:
            pass


async def _main(spec: WorkerSpec) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(spec, stop)


def main(argv: list[str] | None = None) -> None:
    """``python -m stratafl.swarm SPEC.json``: run one swarm process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m stratafl.swarm SPEC.json (started by strata swarm)")
    configure_logging(None, None)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per assignment
    raise_open_files_limit()  # every simulated client holds a socket
    asyncio.run(_main(WorkerSpec.read(Path(args[0]))))
