"""`strata`: start each tier, or a whole local federation with `strata run` / `strata demo`.

The commands only parse their flags and print: each tier starts from its typed options
(`stratafl.sim.tier`), and a whole run is `stratafl.sim.run.run_federation`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from stratafl import __version__
from stratafl.admin_cli import (
    CaFile,
    ControllerUrl,
    Token,
    TokenFile,
    connect,
    db_cli,
    token_cli,
)
from stratafl.client.app import ClientContext, load_app
from stratafl.console import RunView, console, print_promise
from stratafl.errors import StrataError
from stratafl.operator_cli import client_list, combiner_list, model_cli, session_cli
from stratafl.settings import SessionConfig
from stratafl.tier_cli import client_cli, combiner_cli, controller_cli

if TYPE_CHECKING:
    from stratafl.sim.launcher import FederationSpec

app = typer.Typer(
    help="stratafl: three-tier federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(controller_cli, name="controller")
app.add_typer(combiner_cli, name="combiner")
app.add_typer(client_cli, name="client")
app.add_typer(token_cli, name="token")
app.add_typer(session_cli, name="session")
app.add_typer(model_cli, name="model")
combiner_cli.command("list")(combiner_list)
client_cli.command("list")(client_list)


def _version(shown: bool) -> None:
    if shown:
        print(f"stratafl {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """stratafl: three-tier federated learning."""


app.add_typer(db_cli, name="db")

DEMO_APP = "stratafl.apps.fashion_mnist:make_app"
"""The demo's client app, shipped in the package (its source is an example to copy)."""


@app.command("seed")
def seed_model(
    controller: ControllerUrl,
    app_spec: Annotated[str, typer.Option("--app", help="module:attr or file.py:attr")],
    seed: int = 0,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Upload the app's freshly initialised model: the seed of the next session."""
    app_obj = load_app(app_spec, ClientContext(num_partitions=1, seed=seed))
    with connect(controller, token, token_file, ca_file) as api:
        record = api.upload_model(app_obj.initial_params(seed))
    console.print(record.id)


def _run(
    spec: FederationSpec, session: SessionConfig, report_path: Path | None, baselines: bool
) -> None:
    from stratafl.sim.run import run_federation

    console.print(
        f"[bold]stratafl[/]: {spec.clients} clients, {spec.combiners} combiners, "
        f"{session.rounds} rounds, partition {spec.partition}, app {spec.app}"
    )
    progress = RunView(session.rounds)
    try:
        report = run_federation(spec, session, baselines=baselines, progress=progress)
    finally:
        progress.close()
    if report.promise is not None:
        print_promise(report.promise)
    if report_path is not None:
        report_path.write_text(report.to_json())
        console.print(f"report written to {report_path}")


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
    from stratafl.sim.launcher import FederationSpec

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
    spec = FederationSpec(
        app=app_spec,
        clients=clients,
        combiners=combiners,
        partition=partition,
        seed=seed,
        workdir=workdir,
    )
    _run(spec, session, report, baselines)


@app.command("demo")
def demo(
    report: Path = Path("report.json"),
    rounds: int = 20,
    partition: str = "dirichlet:0.5",
) -> None:
    """Fashion-MNIST, 1 controller, 2 combiners, 10 non-IID clients, and the promise check."""
    from stratafl.sim.launcher import FederationSpec

    session = SessionConfig(
        rounds=rounds,
        min_clients=5,
        local_epochs=1,
        batch_size=32,
        learning_rate=0.05,
        round_timeout=120.0,
    )
    spec = FederationSpec(app=DEMO_APP, clients=10, combiners=2, partition=partition, seed=0)
    _run(spec, session, report, baselines=True)


def main() -> None:
    try:
        app()
    except StrataError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")  # e.g. 'stratafl[s3]' is no markup
        sys.exit(1)


if __name__ == "__main__":
    main()
