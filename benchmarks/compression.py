"""What each update codec costs in accuracy and saves in bytes, on Fashion-MNIST.

For each codec, one `strata run` (real processes on loopback: a controller, 2 combiners,
10 clients, FedAvg, Dirichlet 0.5 non-IID split, the same seed), then the final model is
scored on the 10,000 test images. Bytes are those of the round records: the clients'
updates on the wire (``clients_up``) against the raw model size for every update
(``updates_raw``), per round.

    python benchmarks/compression.py --rounds 10 \
        --codecs none float16 int8 topk:fraction=0.1 topk:fraction=0.01 \
        --json compression.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from stratafl.apps.mlp import evaluate
from stratafl.data import load_fashion_mnist
from stratafl.modelfile.codec import copy_params_from_file

STRATA = Path(sys.executable).with_name("strata")
CODECS = ["none", "float16", "int8", "topk:fraction=0.1", "topk:fraction=0.01"]


def run_codec(codec: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """One session with ``codec``; its test accuracy and bytes per round."""
    command = [
        str(STRATA), "run", "--aggregator", "fedavg", "--partition", args.partition,
        "--clients", str(args.clients), "--rounds", str(args.rounds), "--seed", str(args.seed),
        "--compression", codec, "--no-baselines", "--workdir", str(workdir),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    report = json.loads((workdir / "report.json").read_text())
    rounds = [r for r in report["rounds"] if r["status"] == "finished"]
    data = load_fashion_mnist()
    scores = evaluate(copy_params_from_file(Path(report["model_file"])), data.x_test, data.y_test)
    up = statistics.fmean(r["traffic"]["clients_up"] for r in rounds)
    raw = statistics.fmean(r["traffic"]["updates_raw"] for r in rounds)
    return {
        "codec": codec,
        "command": " ".join(command[1:]),
        "rounds": len(rounds),
        "test_accuracy": scores["accuracy"],
        "validation_accuracy": rounds[-1]["accuracy"],
        "bytes_up_per_round": up,
        "raw_bytes_up_per_round": raw,
        "wire_over_raw": up / raw,
        "model_bytes": rounds[-1]["traffic"]["model_bytes"],
        "median_round_seconds": statistics.median(r["duration"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", nargs="+", default=CODECS)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--partition", default="dirichlet:0.5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("compression.json"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="strata-compression-") as tmp:
        for codec in args.codecs:
            results.append(run_codec(codec, args, Path(tmp) / codec.replace(":", "-")))
            print(f"{codec}: done", file=sys.stderr)
    base = next((r for r in results if r["codec"] == "none"), results[0])
    print(
        f"{'codec':<22}{'test acc':>9}{'vs ' + base['codec']:>12}{'bytes up/round':>17}{'ratio':>8}"
    )
    for r in results:
        r["accuracy_minus_base"] = r["test_accuracy"] - base["test_accuracy"]
        r["bytes_ratio_to_base"] = r["bytes_up_per_round"] / base["bytes_up_per_round"]
        print(
            f"{r['codec']:<22}{r['test_accuracy']:>9.4f}{r['accuracy_minus_base']:>+12.4f}"
            f"{r['bytes_up_per_round'] / 1e6:>14.3f} MB{r['bytes_ratio_to_base']:>8.3f}"
        )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(
        json.dumps({"settings": settings, "base": base["codec"], "results": results}, indent=2)
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
