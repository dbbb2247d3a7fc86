"""Peak memory of a combiner aggregating K updates of a large model, per rule.

FedAvg folds each update as it arrives (O(model)); median and Krum need every update, so the
combiner spools them to disk and computes in coordinate blocks (O(model + block)). One
controller and one combiner run as processes; the K clients are threads of this process.
Each rule gets a fresh combiner so its peak (VmHWM from /proc) is its own.

    python benchmarks/aggregation_memory.py --clients 20 --params 25000000 \
        --rules fedavg median krum:f=1
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np
from tier_probes import MemorySampler, memory_kib, pid_of

from stratafl.client.app import TrainResult
from stratafl.client.runtime import ClientRuntime
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig


class NoisyApp:
    """Returns the model plus a little client-specific noise (distinct updates, cheap)."""

    def __init__(self, size: int, index: int) -> None:
        self.size, self.index = size, index

    def initial_params(self, seed: int) -> dict[str, np.ndarray]:
        return {"w": np.zeros(self.size, np.float32)}

    def train(self, params, config) -> TrainResult:
        return TrainResult({"w": params["w"] + np.float32(self.index * 1e-3)}, num_examples=1)

    def validate(self, params, config) -> dict[str, float]:
        return {}


def measure(rule: str, clients: int, params: int) -> dict:
    spec = FederationSpec(app="(in-process clients)", clients=0, combiners=1)
    with LocalFederation(spec) as federation:
        federation.client.upload_model(NoisyApp(params, 0).initial_params(0))
        pid = pid_of(federation, "combiner-0")
        runtimes = [
            ClientRuntime(
                f"c{i}",
                federation.url,
                NoisyApp(params, i),
                credentials=federation.credentials(f"c{i}"),
            )
            for i in range(clients)
        ]
        for runtime in runtimes:
            threading.Thread(target=runtime.run, daemon=True).start()
        try:
            federation.wait_for_clients(clients)
            config = SessionConfig(
                rounds=1,
                min_clients=clients,
                aggregator=rule,
                validate_each_round=False,
                round_timeout=1200,
            )
            with MemorySampler(pid) as sampled:
                started = time.monotonic()
                session, rounds = federation.run_session(config)
                seconds = time.monotonic() - started
        finally:
            for runtime in runtimes:
                runtime.stop()
        assert session.status == "finished", session.reason
        peak_mib = memory_kib(pid)["VmHWM"] / 1024
    model_mb = params * 4 / 2**20
    return {
        "rule": rule,
        "clients": clients,
        "model_mib": model_mb,
        "updates_total_mib": clients * model_mb,
        "peak_rss_mib": peak_mib,
        "peak_anon_mib_sampled": sampled.peak_anon_kib / 1024,
        "peak_rss_over_model": peak_mib / model_mb,
        "round_seconds": rounds[0].duration,
        "session_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--params", type=int, default=25_000_000, help="float32 parameters")
    parser.add_argument("--rules", nargs="+", default=["fedavg", "median", "krum:f=1"])
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/aggregation_memory.json")
    )
    args = parser.parse_args()
    results = [measure(rule, args.clients, args.params) for rule in args.rules]
    print(
        f"{'rule':<12} {'clients':>7} {'model MiB':>9} {'all updates MiB':>15} "
        f"{'peak RSS MiB':>12} {'peak anon MiB':>13} {'RSS/model':>9} {'round s':>8}"
    )
    for r in results:
        print(
            f"{r['rule']:<12} {r['clients']:>7} {r['model_mib']:>9.0f} "
            f"{r['updates_total_mib']:>15.0f} "
            f"{r['peak_rss_mib']:>12.0f} {r['peak_anon_mib_sampled']:>13.0f} "
            f"{r['peak_rss_over_model']:>9.1f} {r['round_seconds']:>8.1f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
