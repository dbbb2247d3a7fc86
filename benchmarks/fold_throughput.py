"""The fold alone: how fast one combiner checks and folds staged updates, in one process.

Writes K updates of P float32 in T tensors as model files (as a combiner stages them),
then times `Collector.add` on each (NaN/Inf check and FedAvg fold, read from the mapped
file) and `Collector.result` (the partial), with nothing else running in the process.
The first update folds into fresh sums (their pages are touched for the first time);
the median over the rest is the steady rate. Prints a table and writes JSON.

    python benchmarks/fold_throughput.py --params 25000000 --tensors 8 --updates 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from stratafl.aggregate import FedAvg
from stratafl.collect.collector import Collector
from stratafl.modelfile.codec import save_params


def measure(params: int, tensors: int, updates: int) -> dict:
    sizes = [len(part) for part in np.array_split(np.arange(params), tensors)]
    rng = np.random.default_rng(0)
    reference = {f"t{i}": np.zeros(n, np.float32) for i, n in enumerate(sizes)}
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for k in range(updates):
            path = Path(scratch) / f"update-{k}.safetensors"
            save_params(
                path,
                {name: rng.normal(size=a.size).astype(np.float32) for name, a in reference.items()},
            )
            paths.append(path)
        collector = Collector.for_updates(FedAvg(), reference)
        seconds = []
        for path in paths:
            started = time.perf_counter()
            collector.add(path, 10.0)
            seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        collector.result()
        result_seconds = time.perf_counter() - started
    nbytes = params * 4
    return {
        "params": params,
        "tensors": tensors,
        "update_mb": nbytes / 1e6,
        "updates": updates,
        "add_seconds": seconds,
        "first_add_mb_per_s": nbytes / seconds[0] / 1e6,
        "steady_add_mb_per_s": nbytes / statistics.median(seconds[1:] or seconds) / 1e6,
        "result_mb_per_s": nbytes / result_seconds / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=25_000_000)
    parser.add_argument("--tensors", type=int, default=8)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/fold_throughput.json")
    )
    args = parser.parse_args()
    r = measure(args.params, args.tensors, args.updates)
    print(
        f"{'update MB':>9} {'tensors':>7} {'first add MB/s':>14} {'steady add MB/s':>15} "
        f"{'partial MB/s':>12}"
    )
    print(
        f"{r['update_mb']:>9.0f} {r['tensors']:>7} {r['first_add_mb_per_s']:>14.0f} "
        f"{r['steady_add_mb_per_s']:>15.0f} {r['result_mb_per_s']:>12.0f}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(r, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
