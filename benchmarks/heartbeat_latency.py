"""Heartbeat handling at the controller, two checkouts alternately, on PostgreSQL.

Each run starts one checkout's controller as its own process (``--insecure``, a fresh
PostgreSQL database), registers C combiners over gRPC and has them heartbeat once a second
with N client ids between them, as C combiners holding N connected clients do (the first
heartbeat writes every client, then only newcomers, and every 30 s all of them again; so
the default 35 s of measurement includes one full refresh). Meanwhile ``GET /health``, an
endpoint that does nothing, is timed every 20 ms: its latency above the idle one is how
long the controller's event loop was held up. Printed and written to JSON per checkout:
the heartbeat's round trip (p50, p99, max: the time the controller takes to handle it,
over loopback) and the health probe's (p50, p99, max).

The controllers run the checkouts' own code (``PYTHONPATH=<checkout>/src``); this script
only speaks the wire, which both share. The old layout (``stratafl.sim``) is recognised.

    python benchmarks/heartbeat_latency.py --before /work/before --after . \\
        --clients 10000 --repeats 3

The heartbeats come from this process, not from real combiners with swarm clients: the
controller sees the same messages (the load 10,000 swarm clients put on it), and on a
machine shared with others the fleet's own CPU would drown what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc.aio
import httpx
import psycopg

from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc

POSTGRES_ADMIN = os.environ.get(
    "STRATA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PROBE_SECONDS = 0.02


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``values`` (seconds), in milliseconds."""
    return {
        "p50_ms": 1000 * statistics.median(values),
        "p99_ms": 1000 * percentile(values, 0.99),
        "max_ms": 1000 * max(values),
        "count": len(values),
    }


def tier_module(checkout: Path) -> str:
    launch = checkout / "src" / "stratafl" / "launch" / "tier.py"
    return "stratafl.launch.tier" if launch.exists() else "stratafl.sim.tier"


class Database:
    """A fresh PostgreSQL database for one run, dropped after it."""

    def __enter__(self) -> str:
        self.name = f"strata_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')


def start_controller(checkout: Path, workdir: Path, database_url: str) -> subprocess.Popen:
    ready = workdir / "ready.json"
    options = {
        "workdir": str(workdir / "controller"),
        "http_port": 0,
        "grpc_port": 0,
        "database_url": database_url,
        "ready_file": str(ready),
        "insecure": True,
    }
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve() / "src")}
    command = [sys.executable, "-m", tier_module(checkout), "controller", json.dumps(options)]
    process = subprocess.Popen(command, env=env, cwd=workdir)
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the controller of {checkout} did not start")
        time.sleep(0.05)
    return process


async def drive(ready: dict, clients: int, combiners: int, seconds: float) -> dict:
    """Heartbeats and health probes for ``seconds``; returns their latencies."""
    ids = [f"client-{i:06d}" for i in range(clients)]
    shares = {f"combiner-{c}": ids[c::combiners] for c in range(combiners)}
    heartbeats: list[float] = []
    probes: list[float] = []
    async with (
        grpc.aio.insecure_channel(ready["grpc_address"]) as channel,
        httpx.AsyncClient(base_url=ready["url"]) as http,
    ):
        stub = pb_grpc.ControllerStub(channel)
        for n, combiner_id in enumerate(shares):
            info = pb.CombinerInfo(
                combiner_id=combiner_id, address=f"127.0.0.1:{20000 + n}", max_clients=clients
            )
            await stub.RegisterCombiner(info)
        messages = [pb.CombinerHeartbeat(combiner_id=c, client_ids=s) for c, s in shares.items()]
        await asyncio.gather(*(stub.Heartbeat(m) for m in messages))  # the first writes all
        end = time.monotonic() + seconds

        async def beat(message: pb.CombinerHeartbeat) -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                reply = await stub.Heartbeat(message)
                heartbeats.append(time.perf_counter() - started)
                assert reply.ok, reply.message
                await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))

        async def probe() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                (await http.get("/api/v1/health")).raise_for_status()
                probes.append(time.perf_counter() - started)
                await asyncio.sleep(PROBE_SECONDS)

        await asyncio.gather(probe(), *(beat(m) for m in messages))
    return {"heartbeat": summary(heartbeats), "health": summary(probes)}


def run_once(checkout: Path, args: argparse.Namespace) -> dict:
    with Database() as url, tempfile.TemporaryDirectory(prefix="strata-heartbeat-") as folder:
        workdir = Path(folder)
        process = start_controller(checkout, workdir, url)
        try:
            ready = json.loads((workdir / "ready.json").read_text())
            return asyncio.run(drive(ready, args.clients, args.combiners, args.seconds))
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--combiners", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=35.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("heartbeat_latency.json"))
    args = parser.parse_args()
    checkouts = {"before": args.before, "after": args.after}
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    for repeat in range(args.repeats):
        for name, checkout in checkouts.items():  # alternately: drift hits both alike
            result = run_once(checkout, args)
            runs[name].append(result)
            hb, health = result["heartbeat"], result["health"]
            print(
                f"repeat {repeat + 1} {name:6s}: heartbeat p50 {hb['p50_ms']:.1f} ms "
                f"p99 {hb['p99_ms']:.1f} ms; health p99 {health['p99_ms']:.1f} ms",
                flush=True,
            )

    def median_of(name: str, part: str, key: str) -> float:
        return statistics.median(run[part][key] for run in runs[name])

    print(
        f"\n{args.clients} clients on {args.combiners} combiner(s), PostgreSQL, "
        f"{args.repeats} runs of {args.seconds:.0f} s each (medians of the runs)"
    )
    header = f"{'':8s}" + "".join(
        f"{p + ' ' + k:>18s}" for p in ("heartbeat", "health") for k in ("p50", "p99", "max")
    )
    print(header)
    table: dict[str, dict[str, float]] = {}
    for name in checkouts:
        row = {
            f"{part}_{key}": median_of(name, part, f"{key}_ms")
            for part in ("heartbeat", "health")
            for key in ("p50", "p99", "max")
        }
        table[name] = row
        print(f"{name:8s}" + "".join(f"{value:16.1f}ms" for value in row.values()))
    ratios = {key: table["after"][key] / table["before"][key] for key in table["after"]}
    print("after/before  " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    args.output.write_text(
        json.dumps(
            {
                "clients": args.clients,
                "combiners": args.combiners,
                "seconds": args.seconds,
                "checkouts": {name: str(path.resolve()) for name, path in checkouts.items()},
                "runs": runs,
                "medians": table,
                "after_over_before": ratios,
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
