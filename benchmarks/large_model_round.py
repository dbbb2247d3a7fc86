"""A gigabyte model round: K clients on one combiner, a model of P float32 in T tensors.

The controller, the combiner and the K clients each run as their own process on loopback
(secured unless ``--insecure``); training adds 1 to every weight in place, so the round is
the protocol's own cost at this size. Each round moves the model from the controller to
the combiner, to every client and back, through the fold, to the controller, into the
model store. Prints a table and writes JSON with:

- the round time (median of R rounds) and where it goes: the combiner's fetch of the
  model, the clients' tasks (download, train, upload, as the combiner timed them), disk
  staging of the updates, the fold (with its throughput), the controller's merge and store;
- the combiner's peak RSS (VmHWM) against the goal of 3 x model + 200 MB, with the peak
  anonymous and file-backed parts sampled apart.

    python benchmarks/large_model_round.py --params 250000000 --clients 4 --rounds 3

A real model of this size has many tensors (``--tensors``, default 64); ``--tensors 1``
shows a single 1 GB tensor, whose file pages the fold maps whole.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from layered_app import LayeredApp
from tier_probes import (
    MIB,
    MemorySampler,
    combiner_metrics,
    cpu_seconds,
    memory_kib,
    pid_of,
    py_spy,
)

from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.modelfile.codec import save_params
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus


def measure(
    params: int, tensors: int, clients: int, rounds: int, insecure: bool, profile: Path | None
) -> dict:
    os.environ["STRATA_BENCH_PARAMS"] = str(params)  # read by the client processes
    os.environ["STRATA_BENCH_TENSORS"] = str(tensors)
    model_bytes = params * 4
    spec = FederationSpec(
        app=f"{Path(__file__).resolve().parent / 'layered_app.py'}:make_app",
        clients=clients,
        combiners=1,
        insecure=insecure,
    )
    with LocalFederation(spec) as federation:
        with tempfile.TemporaryDirectory(dir=federation.workdir) as scratch:
            seed = Path(scratch) / "seed.safetensors"
            save_params(seed, LayeredApp(params, tensors).initial_params(0))
            federation.client.upload_model_file(seed)
        federation.wait_for_clients(clients)
        combiner = pid_of(federation, "combiner-0")
        idle = memory_kib(combiner)["VmRSS"] * 1024
        config = SessionConfig(
            rounds=rounds, min_clients=clients, validate_each_round=False, round_timeout=3600
        )
        everyone = {t.name: t.process.pid for t in federation.group.tiers}
        cpu_before = {name: cpu_seconds(pid) for name, pid in everyone.items()}
        profiled = {name: everyone[name] for name in ("controller", "combiner-0", "client-0")}
        with MemorySampler(combiner) as sampled, py_spy(profile, profiled):
            started = time.monotonic()
            session, rows = federation.run_session(config, poll_seconds=0.2)
            wall = time.monotonic() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in everyone.items()}
        peak = memory_kib(combiner)["VmHWM"] * 1024
        metrics = combiner_metrics(federation)
    assert session.status == "finished", session.reason
    accepted = [sum(o.status == OutcomeStatus.OK for o in row.outcomes) for row in rows]
    tasks = [max(o.seconds for o in row.outcomes) for row in rows]
    fold_seconds = metrics["stratafl_combiner_fold_seconds_total"]
    per_round = {
        "combiner fetches the model": metrics["stratafl_combiner_phase_seconds_total{phase=fetch}"]
        / len(rows),
        "slowest client task (download, train, upload)": statistics.median(tasks),
        "  of which disk staging (all updates)": metrics[
            "stratafl_combiner_phase_seconds_total{phase=stage}"
        ]
        / len(rows),
        "fold (all updates) and partial": fold_seconds / len(rows),
        "combiner's part in all": statistics.median(r.timings["train"] for r in rows),
        "controller merges the partial": statistics.median(r.timings["reduce"] for r in rows),
        "controller stores the model": statistics.median(r.timings["store"] for r in rows),
        "round": statistics.median(r.duration for r in rows),
    }
    goal = 3 * model_bytes + 200 * 10**6
    return {
        "params": params,
        "tensors": tensors,
        "model_mb": model_bytes / 1e6,
        "clients": clients,
        "rounds": rounds,
        "secured": not insecure,
        "round_seconds": [r.duration for r in rows],
        "seconds_per_round": per_round,
        "fold_mb_per_s": metrics["stratafl_combiner_fold_bytes_total"] / fold_seconds / 1e6,
        "combiner_idle_rss_mib": idle / MIB,
        "combiner_peak_rss_mib": peak / MIB,
        "combiner_peak_anon_mib": sampled.peak_anon_kib / 1024,
        "combiner_peak_file_mib": sampled.peak_file_kib / 1024,
        "goal_rss_mib": goal / MIB,
        "within_goal": peak <= goal,
        "updates_accepted_per_round": accepted,
        "cpu_seconds_per_round": {name: used / len(rows) for name, used in cpu.items()},
        "cpu_share_of_two_cores": sum(cpu.values()) / (2 * wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=250_000_000, help="float32 values")
    parser.add_argument("--tensors", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--insecure", action="store_true", help="no TLS and no tokens")
    parser.add_argument("--py-spy", type=Path, help="record the controller, combiner, a client")
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/large_model_round.json")
    )
    args = parser.parse_args()
    result = measure(
        args.params, args.tensors, args.clients, args.rounds, args.insecure, args.py_spy
    )
    print(
        f"{result['model_mb']:.0f} MB model in {result['tensors']} tensors, "
        f"{result['clients']} clients, {result['rounds']} rounds, "
        f"{'secured' if result['secured'] else 'insecure'}"
    )
    print(f"{'where the time goes (median per round)':<50} {'seconds':>8}")
    for what, seconds in result["seconds_per_round"].items():
        print(f"{what:<50} {seconds:>8.2f}")
    print(f"fold throughput: {result['fold_mb_per_s']:.0f} MB/s")
    print(
        f"combiner RSS: idle {result['combiner_idle_rss_mib']:.0f} MiB, peak "
        f"{result['combiner_peak_rss_mib']:.0f} MiB (anonymous "
        f"{result['combiner_peak_anon_mib']:.0f}, file {result['combiner_peak_file_mib']:.0f}); "
        f"goal 3 x model + 200 MB = "
        f"{result['goal_rss_mib']:.0f} MiB: {'met' if result['within_goal'] else 'NOT met'}"
    )
    print(f"updates accepted per round: {result['updates_accepted_per_round']}")
    cpu = ", ".join(f"{name} {used:.1f}" for name, used in result["cpu_seconds_per_round"].items())
    print(f"CPU seconds per round: {cpu}")
    print(f"the processes kept {100 * result['cpu_share_of_two_cores']:.0f} % of 2 cores busy")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
