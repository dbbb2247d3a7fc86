"""Clients per combiner: N swarm clients on one combiner, a 70 kB model, trivial training.

A secured federation (TLS and tokens) of one controller and one combiner, each its own
process (`stratafl.launch.federation`), the combiner's ``--max-clients`` raised to N; then
`strata swarm`'s fleet of N clients over P processes (each client its own token, channel,
task stream and transfers; the app: `stratafl.apps.noise`, 17,500 float32), and a session
of R rounds without validation. Everything shares this machine's cores. Prints a table and
writes JSON: N, round seconds (median of the finished rounds, with the controller's split
into the combiner's part and the reduce; a round that failed and ran again is counted
apart), the combiner's peak RSS, the controller's RSS, the updates accepted per round
attempt, CPU seconds per round of each process, and the swarm's memory per client.

    python benchmarks/clients_per_combiner.py --clients 1000 5000 --rounds 5
    python benchmarks/clients_per_combiner.py --clients 20000 --combiners 2 --rounds 2

With ``--combiners C`` the N clients spread over C combiners (each ``--max-clients``
N/C, the controller assigning each client to the least loaded); the combiner figures are
then the highest of the C.

``--py-spy DIR`` records the controller and the combiner during the session with py-spy
(``pip install py-spy``) into DIR as collapsed stacks, and prints each one's top functions.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

from tier_probes import MIB, cpu_seconds, pid_of, py_spy, top_functions

from stratafl.apps.noise import NoiseApp
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus
from stratafl.swarm import Fleet, SwarmOptions, fleet_identities
from stratafl.swarm.stats import peak_rss_bytes, rss_bytes


def measure(
    clients: int,
    processes: int,
    rounds: int,
    validate: bool,
    profile: Path | None,
    native: bool = False,
    combiners: int = 1,
) -> dict:
    spec = FederationSpec(
        app="stratafl.apps.noise:make_app",
        clients=0,
        combiners=combiners,
        max_clients_per_combiner=-(-clients // combiners),
    )
    with LocalFederation(spec) as federation:
        federation.client.upload_model(NoiseApp().initial_params(0))
        admin = federation.workdir / "admin.token"
        admin.write_text(federation.admin_token or "")
        options = SwarmOptions(
            controller=federation.url,
            clients=clients,
            processes=processes,
            token_file=admin,
            ca_file=federation.ca_file,
        )
        started = time.monotonic()
        identities = fleet_identities(options)
        mint_seconds = time.monotonic() - started
        with Fleet(options) as fleet:
            started = time.monotonic()
            fleet.start(identities)
            connected = fleet.wait_connected(clients, timeout=900)
            connect_seconds = time.monotonic() - started
            names = ["controller"] + [f"combiner-{i}" for i in range(combiners)]
            pids = {name: pid_of(federation, name) for name in names}
            combiner_connected = max(rss_bytes(pids[n]) for n in names[1:])
            tiers = pids | {f"swarm-{w.index}": w.process.pid for w in fleet.workers}
            cpu_before = {name: cpu_seconds(pid) for name, pid in tiers.items()}
            config = SessionConfig(
                rounds=rounds,
                min_clients=clients,
                round_timeout=600,
                validate_each_round=validate,
            )
            with py_spy(profile and profile / str(clients), pids, native):
                started = time.monotonic()
                session, rows = federation.run_session(config, poll_seconds=0.2)
                session_seconds = time.monotonic() - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in tiers.items()}
            combiner_peak = max(peak_rss_bytes(pids[n]) for n in names[1:])
            controller_rss = rss_bytes(pids["controller"])
            controller_peak = peak_rss_bytes(pids["controller"])
            swarm = fleet.totals()
        assert session.status == "finished", session.reason
    finished = [row for row in rows if row.status == RoundStatus.FINISHED]
    durations = [row.duration for row in finished]
    accepted = [sum(o.status == OutcomeStatus.OK for o in row.outcomes) for row in rows]
    not_ok = collections.Counter(
        f"{o.status}: {o.reason[:80]}" for row in rows for o in row.outcomes if o.status != "ok"
    )
    result = {
        "clients": clients,
        "combiners": combiners,
        "swarm_processes": processes,
        "rounds": rounds,
        "validate_each_round": validate,
        "model_float32": 17_500,
        "round_seconds_median": statistics.median(durations),
        "round_seconds": durations,
        "combiner_part_seconds_median": statistics.median(r.timings["train"] for r in finished),
        "reduce_seconds_median": statistics.median(r.timings["reduce"] for r in finished),
        "failed_rounds_run_again": len(rows) - len(finished),
        "updates_accepted_per_round": accepted,
        "every_update_accepted": all(a == clients for a in accepted),
        "outcomes_not_ok": dict(not_ok),
        "combiner_peak_rss_mib": combiner_peak / MIB,
        "controller_rss_mib": controller_rss / MIB,
        "controller_peak_rss_mib": controller_peak / MIB,
        "combiner_rss_connected_mib": combiner_connected / MIB,
        "cpu_seconds_per_round": {name: used / len(rows) for name, used in cpu.items()},
        "swarm_rss_mib": swarm.rss_bytes / MIB,
        "swarm_kib_per_client_connected": connected.bytes_per_client() / 1024,
        "swarm_kib_per_client": swarm.bytes_per_client() / 1024,
        "mint_tokens_seconds": mint_seconds,
        "connect_seconds": connect_seconds,
        "session_wall_seconds": session_seconds,
    }
    if profile is not None:
        for name in pids:
            path = profile / str(clients) / f"{name}.txt"
            if path.exists():
                result[f"profile_{name}"] = [
                    {"function": f, "share": round(s, 3)} for f, s in top_functions(path)
                ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--processes", type=int, default=2, help="swarm processes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--validate", action="store_true", help="validate after each round too")
    parser.add_argument("--py-spy", type=Path, default=None, help="profile into this folder")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument(
        "--combiners", type=int, default=1, help="the clients spread over this many combiners"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("benchmarks/results/clients_per_combiner.json")
    )
    args = parser.parse_args()
    results = []
    for clients in args.clients:
        results.append(
            measure(
                clients,
                args.processes,
                args.rounds,
                args.validate,
                args.py_spy,
                args.native,
                args.combiners,
            )
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    print(
        f"{'clients':>8} {'round s':>8} {'combiner s':>10} {'reduce s':>8} {'accepted':>9} "
        f"{'combiner MiB':>12} {'controller MiB':>14} {'swarm kB/client':>15}"
    )
    for r in results:
        print(
            f"{r['clients']:>8} {r['round_seconds_median']:>8.2f} "
            f"{r['combiner_part_seconds_median']:>10.2f} {r['reduce_seconds_median']:>8.2f} "
            f"{min(r['updates_accepted_per_round']):>9} {r['combiner_peak_rss_mib']:>12.0f} "
            f"{r['controller_rss_mib']:>14.0f} {r['swarm_kib_per_client']:>15.1f}"
        )
        for key in ("profile_controller", "profile_combiner-0"):
            for row in r.get(key, [])[:8]:
                print(f"    {key[8:]:<11} {row['share']:>6.1%}  {row['function']}")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
