"""Round latency side by side: stratafl and Flower 1.42 (deployment engine), in one run.

Timings on shared machines drift, so a comparison with a peer means measuring both in the
same invocation and reporting the ratio. Each workload runs twice, back to back:

- Flower: ``flower-superlink`` (insecure, on loopback) and one ``flower-supernode`` per
  client, each its own process from the virtualenv that ``setup_flower.sh`` creates, then
  ``flwr run`` of ``flower_app/`` (a ServerApp with FedAvg over numpy arrays, a ClientApp
  that adds 1, no evaluation). The ServerApp times each round on its side.
- stratafl: `benchmarks/round_latency.py`'s ``measure`` with the same clients (as
  processes), parameters and rounds, one combiner, no validation, ``--insecure`` like
  Flower's side unless ``--stratafl-secured``.

Workloads: (a) 10 clients, 1M float32 (4 MB); (b) 2 clients, 25M float32 (100 MB).
Prints median (min-max) round seconds of both and stratafl/Flower, and writes JSON.

    benchmarks/peers/setup_flower.sh                                # once
    python benchmarks/peers/flower_round_latency.py --rounds 10     # (a) and (b)
    python benchmarks/peers/flower_round_latency.py --quick         # 3 rounds, 4 x 1M
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from flower_federation import FlowerError, FlowerFederation

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Workload:
    name: str
    clients: int
    params: int


WORKLOADS = {"a": Workload("a", 10, 1_000_000), "b": Workload("b", 2, 25_000_000)}


def load_round_latency() -> ModuleType:
    """`benchmarks/round_latency.py`, our side (benchmarks/ is a folder of scripts, which
    import each other: it goes on the import path, as when a script there runs)."""
    path = HERE.parent / "round_latency.py"
    if str(HERE.parent) not in sys.path:
        sys.path.insert(0, str(HERE.parent))
    spec = importlib.util.spec_from_file_location("round_latency", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spread(durations: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(durations),
        "min": min(durations),
        "max": max(durations),
    }


def measure_flower(venv: Path, workload: Workload, rounds: int, timeout: float) -> dict:
    """Flower's round durations, or the error that stopped it (its logs are kept then)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"strata-flower-{workload.name}-"))
    try:
        with FlowerFederation(venv, workload.clients, workdir) as federation:
            durations = federation.run(rounds, workload.params, timeout)
    except FlowerError as error:
        print(f"flower, workload {workload.name}: {error} (logs in {workdir})", flush=True)
        return {"error": str(error), "logs": str(workdir)}
    shutil.rmtree(workdir, ignore_errors=True)
    return {"round_seconds": durations, **spread(durations)}


def measure_stratafl(
    round_latency: ModuleType, workload: Workload, rounds: int, secured: bool
) -> dict:
    result = round_latency.measure(
        "processes",
        workload.clients,
        workload.params,
        rounds,
        combiners=1,
        validate=False,
        insecure=not secured,
    )
    return {"round_seconds": result["round_seconds"], **spread(result["round_seconds"])}


def seconds(side: dict) -> str:
    if "median" not in side:
        return "failed"
    return f"{side['median']:.2f} ({side['min']:.2f}-{side['max']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=["a", "b"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--quick", action="store_true", help="a check that all works: 3 rounds, 4 clients x 1M"
    )
    parser.add_argument("--flower-venv", type=Path, default=HERE / ".venv-flower")
    parser.add_argument(
        "--flower-timeout",
        type=float,
        help="seconds Flower's run may take before it counts as failed (default 120 + 60/round)",
    )
    parser.add_argument(
        "--stratafl-secured", action="store_true", help="stratafl with TLS and tokens"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="default benchmarks/results/peers_round_latency.json (_quick.json with --quick)",
    )
    args = parser.parse_args()
    # a SIGTERM to the benchmark unwinds the `with` blocks, so both federations stop too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workloads = [WORKLOADS[name] for name in args.workloads]
    if args.quick:
        args.rounds, workloads = 3, [Workload("a-quick", 4, 1_000_000)]
    output = args.output or Path(
        f"benchmarks/results/peers_round_latency{'_quick' if args.quick else ''}.json"
    )
    if not (args.flower_venv / "bin" / "flower-superlink").exists():
        sys.exit(f"Flower is not installed in {args.flower_venv}: run {HERE}/setup_flower.sh")
    timeout = args.flower_timeout or 120.0 + 60.0 * args.rounds
    round_latency = load_round_latency()
    results = []
    for workload in workloads:
        print(f"workload {workload.name}: Flower, then stratafl ...", flush=True)
        flower = measure_flower(args.flower_venv, workload, args.rounds, timeout)
        ours = measure_stratafl(round_latency, workload, args.rounds, args.stratafl_secured)
        ratio = ours["median"] / flower["median"] if "median" in flower else None
        results.append(
            {
                "workload": workload.name,
                "clients": workload.clients,
                "params": workload.params,
                "model_mb": workload.params * 4 / 1e6,
                "rounds": args.rounds,
                "stratafl_secured": args.stratafl_secured,
                "flower_version": "1.42.0",
                "stratafl": ours,
                "flower": flower,
                "ratio_stratafl_to_flower": ratio,
            }
        )
    print(
        f"{'workload':<9} {'clients':>7} {'model MB':>8} {'rounds':>6}  "
        f"{'stratafl median (min-max) s':<28} {'Flower median (min-max) s':<28} {'ratio':>6}"
    )
    for r in results:
        ratio = (
            "-" if r["ratio_stratafl_to_flower"] is None else f"{r['ratio_stratafl_to_flower']:.3f}"
        )
        print(
            f"{r['workload']:<9} {r['clients']:>7} {r['model_mb']:>8.0f} {r['rounds']:>6}  "
            f"{seconds(r['stratafl']):<28} {seconds(r['flower']):<28} {ratio:>6}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"written to {output}")
    if any("error" in r["flower"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
