"""Round latency: K clients, P float32 parameters, trivial training, R rounds.

The controller and the combiner run as their own processes. The K clients run either as
processes of their own (`strata client start`, as in a deployment) or as threads of this
process (each with its own channel and TCP connection; they then share one interpreter).
Training is trivial, so the round time is the protocol's own cost: task push, model
download, upload, fold, reduce, store. Prints a table and writes JSON.

    python benchmarks/round_latency.py --clients 10 --params 1000000 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

from layered_app import LayeredApp
from tier_probes import pid_of, py_spy

from stratafl.client.runtime import ClientRuntime
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig


def measure(
    mode: str,
    clients: int,
    params: int,
    rounds: int,
    combiners: int,
    validate: bool,
    insecure: bool = False,
    profile: Path | None = None,
) -> dict:
    os.environ["STRATA_BENCH_PARAMS"] = str(params)  # read by the client processes
    os.environ["STRATA_BENCH_TENSORS"] = "1"
    in_processes = mode == "processes"
    spec = FederationSpec(
        app=f"{Path(__file__).resolve().parent / 'layered_app.py'}:make_app",
        clients=clients if in_processes else 0,
        combiners=combiners,
        insecure=insecure,
    )
    with LocalFederation(spec) as federation:
        federation.client.upload_model(LayeredApp(params, 1).initial_params(0))
        runtimes = [
            ClientRuntime(
                f"bench-{i}",
                federation.url,
                LayeredApp(params, 1),
                credentials=federation.credentials(f"bench-{i}"),
            )
            for i in range(0 if in_processes else clients)
        ]
        for runtime in runtimes:
            threading.Thread(target=runtime.run, daemon=True).start()
        federation.wait_for_clients(clients)
        config = SessionConfig(rounds=rounds, min_clients=clients, validate_each_round=validate)
        pids = {name: pid_of(federation, name) for name in ("controller", "combiner-0")}
        with py_spy(profile and profile / mode, pids):
            started = time.monotonic()
            session, rows = federation.run_session(config, poll_seconds=0.05)
            wall = time.monotonic() - started
        for runtime in runtimes:
            runtime.stop()
        assert session.status == "finished", session.reason
    durations = [row.duration for row in rows]
    return {
        "clients_as": mode,
        "clients": clients,
        "params": params,
        "model_mb": params * 4 / 1e6,
        "rounds": rounds,
        "combiners": combiners,
        "validate_each_round": validate,
        "secured": not insecure,
        "round_seconds_median": statistics.median(durations),
        "round_seconds_min": min(durations),
        "round_seconds_max": max(durations),
        "round_seconds": durations,
        "timings_median": {
            part: statistics.median(row.timings.get(part, 0.0) for row in rows)
            for part in ("train", "reduce", "store")
        },
        "session_wall_seconds": wall,
        "bytes_per_round_clients_up": rows[-1].traffic.clients_up,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--combiners", type=int, default=1)
    parser.add_argument("--validate", action="store_true", help="validate after each round too")
    parser.add_argument(
        "--insecure", action="store_true", help="no TLS and no tokens (loopback), to see their cost"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/round_latency.json")
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="record the controller and the combiner with py-spy into this folder "
        "(raw stacks and SVG flame graphs, per client mode)",
    )
    parser.add_argument(
        "--clients-as",
        choices=["processes", "threads", "both"],
        default="both",
        help="client processes (as deployed) or threads of this process",
    )
    args = parser.parse_args()
    modes = ["processes", "threads"] if args.clients_as == "both" else [args.clients_as]
    results = [
        measure(
            mode,
            args.clients,
            args.params,
            args.rounds,
            args.combiners,
            args.validate,
            args.insecure,
            args.py_spy,
        )
        for mode in modes
    ]
    print(
        f"{'clients as':<10} {'clients':>8} {'params':>10} {'model MB':>9} {'rounds':>7} "
        f"{'median s':>9} {'min s':>7} {'max s':>7}"
    )
    for r in results:
        print(
            f"{r['clients_as']:<10} {r['clients']:>8} {r['params']:>10} {r['model_mb']:>9.1f} "
            f"{r['rounds']:>7} {r['round_seconds_median']:>9.3f} "
            f"{r['round_seconds_min']:>7.3f} {r['round_seconds_max']:>7.3f}"
        )
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in r["timings_median"].items())
        print(f"{'':<10} medians of the round's parts: {parts}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
