"""Round latency of two checkouts of stratafl, measured alternately in one run.

Timings on a shared machine drift, so comparing a change means measuring before and after
side by side: this runs each checkout's own ``benchmarks/round_latency.py`` (with that
checkout's ``src`` first on the path, so its own processes run its own code) ``--repeats``
times, alternating, and reports the median round time of each and their ratio. Extra
variants of the newer checkout (e.g. ``--insecure``) are measured in the same rotation.
Prints a table and writes JSON.

    python benchmarks/compare_checkouts.py --before ../before --after . --repeats 3 \\
        --variant "secured=" --variant "insecure=--insecure"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run_once(checkout: Path, extra: list[str], args: argparse.Namespace) -> list[float]:
    """One benchmark run of ``checkout``; returns its round durations."""
    with tempfile.TemporaryDirectory(prefix="strata-compare-") as folder:
        output = Path(folder) / "result.json"
        command = [
            sys.executable,
            str(checkout / "benchmarks" / "round_latency.py"),
            "--clients",
            str(args.clients),
            "--params",
            str(args.params),
            "--rounds",
            str(args.rounds),
            "--clients-as",
            "processes",
            "--output",
            str(output),
            *extra,
        ]
        env = dict(os.environ, PYTHONPATH=f"{checkout / 'src'}{os.pathsep}{checkout}")
        subprocess.run(command, check=True, env=env, cwd=checkout, capture_output=True)
        (result,) = json.loads(output.read_text())
        return [float(d) for d in result["round_seconds"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the older checkout")
    parser.add_argument("--after", type=Path, default=Path("."), help="the newer checkout")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=EXTRA ARGS for the newer checkout (default: one variant, no extra args)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/compare_checkouts.json")
    )
    args = parser.parse_args()
    variants = {"before": (args.before.resolve(), [])}
    for spec in args.variant or ["after="]:
        name, _, extra = spec.partition("=")
        variants[name] = (args.after.resolve(), shlex.split(extra))
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, (checkout, extra) in variants.items():
            rounds[name] += run_once(checkout, extra, args)
            print(f"repeat {repeat + 1}: {name} done", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    print(
        f"{'variant':<12} {'rounds':>7} {'median s':>9} {'min s':>7} {'max s':>7} {'x before':>9}"
    )
    for name, values in rounds.items():
        print(
            f"{name:<12} {len(values):>7} {medians[name]:>9.3f} {min(values):>7.3f} "
            f"{max(values):>7.3f} {medians[name] / medians['before']:>9.2f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "clients": args.clients,
                "params": args.params,
                "repeats": args.repeats,
                "medians": medians,
                "ratios_to_before": {n: m / medians["before"] for n, m in medians.items()},
                "round_seconds": rounds,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
