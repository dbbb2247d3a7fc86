"""`strata`: start each tier, or a whole local federation with `strata run` / `strata demo`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stratafl.client.app import ClientContext, load_app
from stratafl.errors import StrataError
from stratafl.modelfile import params_to_bytes
from stratafl.settings import SessionConfig

app = typer.Typer(
    help="stratafl: three-tier federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
controller_cli = typer.Typer(help="Tier 3: discovery, sessions, reducer, REST API.")
combiner_cli = typer.Typer(help="Tier 2: serves clients and aggregates their updates.")
client_cli = typer.Typer(help="Tier 1: trains on private data.")
app.add_typer(controller_cli, name="controller")
app.add_typer(combiner_cli, name="combiner")
app.add_typer(client_cli, name="client")
console = Console()

DEMO_APP = "examples/fashion_mnist_numpy.py:make_app"


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


@controller_cli.command("start")
def controller_start(
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(help="REST port (0 picks a free one)")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port for combiners (0 = free)")] = 0,
    workdir: Path = Path(".strata/controller"),
    database_url: Annotated[str | None, typer.Option(help="default: SQLite in workdir")] = None,
    model_store: Annotated[str | None, typer.Option(help="default: workdir/models")] = None,
    ready_file: Path | None = None,
    verbose: bool = False,
) -> None:
    from stratafl.controller.main import serve_controller

    _logging(verbose)
    asyncio.run(
        serve_controller(
            workdir,
            host=host,
            http_port=port,
            grpc_port=grpc_port,
            database_url=database_url,
            model_store=model_store,
            ready_file=ready_file,
        )
    )


@combiner_cli.command("start")
def combiner_start(
    controller: Annotated[
        str, typer.Option(help="the controller's URL, e.g. http://127.0.0.1:8080")
    ],
    host: str = "127.0.0.1",
    port: int = 0,
    max_clients: int = 1000,
    id: Annotated[str | None, typer.Option("--id")] = None,  # noqa: A002
    workdir: Path | None = None,
    ready_file: Path | None = None,
    verbose: bool = False,
) -> None:
    from stratafl.combiner.main import serve_combiner

    _logging(verbose)
    folder = workdir or Path(".strata") / (id or "combiner")
    asyncio.run(
        serve_combiner(
            controller,
            host=host,
            port=port,
            max_clients=max_clients,
            combiner_id=id,
            workdir=folder,
            ready_file=ready_file,
        )
    )


@client_cli.command("start")
def client_start(
    controller: Annotated[str, typer.Option(help="the controller's URL")],
    app_spec: Annotated[str, typer.Option("--app", help="module:attr or file.py:attr")],
    id: Annotated[str | None, typer.Option("--id")] = None,  # noqa: A002
    partition_id: int = 0,
    num_partitions: int = 1,
    partitioner: str = "iid",
    seed: int = 0,
    verbose: bool = False,
) -> None:
    import uuid

    from stratafl.client.runtime import ClientRuntime

    _logging(verbose)
    client_id = id or f"client-{uuid.uuid4().hex[:8]}"
    context = ClientContext(
        client_id=client_id,
        partition_id=partition_id,
        num_partitions=num_partitions,
        partitioner=partitioner,
        seed=seed,
    )
    runtime = ClientRuntime(client_id, controller, load_app(app_spec, context))
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop())
    runtime.run()


@app.command("seed")
def seed_model(
    controller: Annotated[str, typer.Option(help="the controller's URL")],
    app_spec: Annotated[str, typer.Option("--app", help="module:attr or file.py:attr")],
    seed: int = 0,
) -> None:
    """Upload the app's freshly initialised model: the seed of the next session."""
    app_obj = load_app(_resolve_app(app_spec), ClientContext(num_partitions=1, seed=seed))
    response = httpx.post(
        f"{controller.rstrip('/')}/api/v1/models",
        content=params_to_bytes(app_obj.initial_params(seed)),
        timeout=60,
    )
    if response.status_code != 201:
        raise StrataError(f"the controller refused the model: {response.text}")
    console.print(response.json()["id"])


def _run(
    *,
    app_spec: str,
    clients: int,
    combiners: int,
    partition: str,
    seed: int,
    session: SessionConfig,
    report_path: Path | None,
    baselines: bool,
    workdir: Path | None,
) -> dict[str, Any]:
    from stratafl.sim.launcher import FederationSpec, LocalFederation
    from stratafl.sim.report import promise_check, round_summary

    spec = FederationSpec(
        app=app_spec,
        clients=clients,
        combiners=combiners,
        partition=partition,
        seed=seed,
        workdir=workdir,
    )
    started = time.monotonic()
    console.print(
        f"[bold]stratafl[/]: {clients} clients, {combiners} combiners, "
        f"{session.rounds} rounds, partition {partition}, app {app_spec}"
    )
    with LocalFederation(spec) as federation:
        federation.upload_seed_model()
        federation.wait_for_clients(clients)
        console.print(f"federation up in {time.monotonic() - started:.1f} s")
        with Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("rounds", total=session.rounds, status="starting")

            def show(_: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
                if rounds:
                    last = round_summary(rounds[-1])
                    acc, loss = last["accuracy"], last["loss"]
                    status = (
                        f"accuracy {acc:.4f}  loss {loss:.4f}"
                        if acc is not None
                        else last["status"]
                    )
                    bar.update(task, completed=len(rounds), status=status)

            result, rounds = federation.run_session(session, progress=show)
        if result["status"] != "finished":
            raise StrataError(f"session {result['id']} {result['status']}: {result['reason']}")
        final_id = result["final_model_id"]
        trail = [m["id"] for m in federation.api("GET", f"/models/{final_id}/trail")][::-1]
        final = federation.download_params(final_id)
    federation_seconds = time.monotonic() - started
    report: dict[str, Any] = {
        "app": app_spec,
        "clients": clients,
        "combiners": combiners,
        "partition": partition,
        "seed": seed,
        "session": session.model_dump(),
        "session_id": result["id"],
        "rounds": [round_summary(r) for r in rounds],
        "model_trail": trail,
        "final_model": final_id,
        "federation_seconds": federation_seconds,
    }
    _print_traffic(report["rounds"])
    if baselines:
        with console.status("promise check: training the baselines") as status:
            check = promise_check(
                app_spec,
                final,
                clients=clients,
                partition=partition,
                seed=seed,
                train_config=session.task_config(0),
                epochs_budget=session.rounds * session.local_epochs,
                on_step=lambda step: status.update(f"promise check: {step}"),
            )
        report["promise"] = check.to_dict()
        _print_promise(report["promise"])
    report["total_seconds"] = time.monotonic() - started
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2))
        console.print(f"report written to {report_path}")
    return report


def _print_traffic(rounds: list[dict[str, Any]]) -> None:
    """Every byte counts: what the session moved, and how long its rounds took."""
    up = sum(r["bytes_up"] for r in rounds)
    down = sum(r["bytes_down"] for r in rounds)
    console.print(
        f"{len(rounds)} rounds, median {statistics.median(r['duration'] for r in rounds):.2f} s"
        " each; "
        f"moved {up / 1e6:.1f} MB up and {down / 1e6:.1f} MB down (both tiers)"
    )


def _print_promise(promise: dict[str, Any]) -> None:
    table = Table(title=f"The promise check (same budget: {promise['epochs_budget']} epochs)")
    table.add_column("model")
    table.add_column("test accuracy", justify="right")
    table.add_row("centralized (pooled data)", f"{promise['centralized_accuracy']:.4f}")
    table.add_row("[bold]federated[/]", f"[bold]{promise['federated_accuracy']:.4f}[/]")
    table.add_row("best client alone", f"{promise['client_alone_best']:.4f}")
    table.add_row("mean client alone", f"{promise['client_alone_mean']:.4f}")
    console.print(table)
    console.print(
        f"gap to centralized: {promise['gap_to_centralized']:+.4f}   "
        f"gain over the best client alone: {promise['gain_over_best_client']:+.4f}"
    )


@app.command("run")
def run(
    app_spec: Annotated[str, typer.Option("--app", help="module:attr or file.py:attr")] = DEMO_APP,
    clients: int = 10,
    combiners: int = 2,
    rounds: int = 3,
    partition: Annotated[str, typer.Option(help="iid | dirichlet:ALPHA | shards:S")] = "iid",
    seed: int = 0,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.05,
    clients_per_round: Annotated[float, typer.Option(help="fraction <= 1 or a count")] = 1.0,
    min_clients: int = 1,
    round_timeout: float = 120.0,
    aggregator: Annotated[
        str, typer.Option(help="RULE[:k=v,...][+OPTIMISER[:k=v,...]], see docs/aggregators.md")
    ] = "fedavg",
    proximal_mu: Annotated[float, typer.Option(help="FedProx mu sent to clients")] = 0.0,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    baselines: Annotated[bool, typer.Option(help="train the promise-check baselines")] = True,
    workdir: Annotated[Path | None, typer.Option(help="keep logs and state here")] = None,
) -> None:
    """Start a whole federation on loopback, run one session, stop everything, report."""
    session = SessionConfig(
        rounds=rounds,
        clients_per_round=clients_per_round,
        min_clients=min_clients,
        round_timeout=round_timeout,
        local_epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        aggregator=aggregator,
        proximal_mu=proximal_mu,
        seed=seed,
    )
    _run(
        app_spec=_resolve_app(app_spec),
        clients=clients,
        combiners=combiners,
        partition=partition,
        seed=seed,
        session=session,
        report_path=report,
        baselines=baselines,
        workdir=workdir,
    )


@app.command("demo")
def demo(
    report: Path = Path("report.json"),
    rounds: int = 20,
    partition: str = "dirichlet:0.5",
) -> None:
    """Fashion-MNIST, 1 controller, 2 combiners, 10 non-IID clients, and the promise check."""
    session = SessionConfig(
        rounds=rounds,
        min_clients=5,
        local_epochs=1,
        batch_size=32,
        learning_rate=0.05,
        round_timeout=120.0,
    )
    _run(
        app_spec=_resolve_app(DEMO_APP),
        clients=10,
        combiners=2,
        partition=partition,
        seed=0,
        session=session,
        report_path=report,
        baselines=True,
        workdir=None,
    )


def _resolve_app(spec: str) -> str:
    """Find ``examples/...py`` from the working directory or from a source checkout."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") and not Path(target).exists():
        checkout = Path(__file__).resolve().parents[2] / target
        if checkout.exists():
            return f"{checkout}:{attr}"
    return spec


def main() -> None:
    try:
        app()
    except StrataError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
