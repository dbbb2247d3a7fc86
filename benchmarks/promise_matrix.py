"""The promise check across data partitions and aggregation rules, on Fashion-MNIST.

Each cell is one `strata run` (10 clients, 2 combiners, real processes) with its own
centralised and clients-alone baselines. Prints a table and writes JSON.

    python benchmarks/promise_matrix.py --rounds 20 \\
        --partitions iid dirichlet:0.5 dirichlet:0.1 shards:2 --aggregators fedavg
    python benchmarks/promise_matrix.py --rounds 20 --partitions dirichlet:0.5 \\
        --aggregators fedavg median trimmed_mean:beta=0.1 krum:f=1 fedadam:server_lr=0.01
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_cell(partition: str, aggregator: str, rounds: int, clients: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "report.json"
        command = [
            sys.executable,
            "-m",
            "stratafl.cli",
            "run",
            "--app",
            "stratafl.apps.fashion_mnist:make_app",
            "--clients",
            str(clients),
            "--combiners",
            "2",
            "--rounds",
            str(rounds),
            "--partition",
            partition,
            "--aggregator",
            aggregator,
            "--seed",
            str(seed),
            "--min-clients",
            str(clients),
            "--report",
            str(report_path),
            "--workdir",
            str(Path(folder) / "run"),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=1800)
        report = json.loads(report_path.read_text())
    return {
        "partition": partition,
        "aggregator": aggregator,
        "rounds": rounds,
        "accuracy_by_round": [r["accuracy"] for r in report["rounds"]],
        **report["promise"],
        "seconds": report["total_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", nargs="+", default=["iid", "dirichlet:0.5"])
    parser.add_argument("--aggregators", nargs="+", default=["fedavg"])
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/promise_matrix.json")
    )
    args = parser.parse_args()
    cells = [
        run_cell(partition, aggregator, args.rounds, args.clients, args.seed)
        for partition in args.partitions
        for aggregator in args.aggregators
    ]
    print(
        f"{'partition':<14} {'aggregator':<26} {'centralized':>11} {'federated':>9} "
        f"{'best alone':>10} {'mean alone':>10} {'seconds':>8}"
    )
    for c in cells:
        print(
            f"{c['partition']:<14} {c['aggregator']:<26} {c['centralized_accuracy']:>11.4f} "
            f"{c['federated_accuracy']:>9.4f} {c['client_alone_best']:>10.4f} "
            f"{c['client_alone_mean']:>10.4f} {c['seconds']:>8.0f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(cells, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
