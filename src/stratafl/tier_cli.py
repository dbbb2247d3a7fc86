"""`strata controller|combiner|client start`: each tier from its flags, as typed options.

The flags become the tier's options dataclass and `stratafl.sim.tier.run_tier` runs it,
the same path the launcher takes, so a renamed option is one change in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratafl.admin_cli import CaFile, ControllerUrl, TokenFile

if TYPE_CHECKING:
    from stratafl.sim.tier import TierOptions

controller_cli = typer.Typer(help="Tier 3: discovery, sessions, reducer, REST API.")
combiner_cli = typer.Typer(help="Tier 2: serves clients and aggregates their updates.")
client_cli = typer.Typer(help="Tier 1: trains on private data.")


def _start_tier(options: TierOptions, verbose: bool) -> None:
    from stratafl.logs import configure_logging
    from stratafl.sim.tier import run_tier

    configure_logging("debug" if verbose else None)
    run_tier(options)


ADVERTISE_HELP = "the name or IP other hosts reach this one at (needed with --host 0.0.0.0)"


@controller_cli.command("start")
def controller_start(
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")] = (
        "127.0.0.1"
    ),
    advertise_address: Annotated[str | None, typer.Option(help=ADVERTISE_HELP)] = None,
    port: Annotated[int, typer.Option(help="REST port (0 picks a free one)")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port for combiners (0 = free)")] = 0,
    workdir: Path = Path(".strata/controller"),
    database_url: Annotated[str | None, typer.Option(help="default: SQLite in workdir")] = None,
    model_store: Annotated[str | None, typer.Option(help="default: workdir/models")] = None,
    ready_file: Path | None = None,
    insecure: Annotated[
        bool, typer.Option(help="no TLS and no tokens: allowed on a loopback --host only")
    ] = False,
    mutual_tls: Annotated[
        bool, typer.Option(help="gRPC callers must also present a certificate of the CA")
    ] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option(help="another name or address the controller is reached at (repeat)"),
    ] = None,
    keep_last: Annotated[
        int, typer.Option(min=0, help="keep the running session's last N models (0: keep all)")
    ] = 10,
    keep_every: Annotated[
        int, typer.Option(min=0, help="keep every N-th round's model (0: keep all)")
    ] = 10,
    verbose: bool = False,
) -> None:
    """Serve the REST API and the combiners' gRPC service, TLS and tokens by default."""
    from stratafl.controller.main import ControllerOptions

    options = ControllerOptions(
        workdir=workdir,
        host=host,
        advertise_address=advertise_address,
        http_port=port,
        grpc_port=grpc_port,
        database_url=database_url,
        model_store=model_store,
        ready_file=ready_file,
        insecure=insecure,
        mutual_tls=mutual_tls,
        tls_hosts=tuple(tls_host or ()),
        keep_last=keep_last,
        keep_every=keep_every,
    )
    _start_tier(options, verbose)


@combiner_cli.command("start")
def combiner_start(
    controller: ControllerUrl,
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")] = (
        "127.0.0.1"
    ),
    port: int = 0,
    advertise_address: Annotated[str | None, typer.Option(help=ADVERTISE_HELP)] = None,
    max_clients: int = 1000,
    id: Annotated[str | None, typer.Option("--id")] = None,  # noqa: A002
    workdir: Path | None = None,
    ready_file: Path | None = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    insecure: Annotated[bool, typer.Option(help="for a controller started --insecure")] = False,
    verbose: bool = False,
) -> None:
    """Serve clients and aggregate their updates; its id is its token's subject."""
    from stratafl.combiner.main import CombinerOptions

    options = CombinerOptions(
        controller=controller,
        workdir=workdir or Path(".strata") / (id or "combiner"),
        host=host,
        port=port,
        advertise_address=advertise_address,
        max_clients=max_clients,
        combiner_id=id,
        ready_file=ready_file,
        token_file=token_file,
        ca_file=ca_file,
        insecure=insecure,
    )
    _start_tier(options, verbose)


@client_cli.command("start")
def client_start(
    controller: ControllerUrl,
    app_spec: Annotated[str, typer.Option("--app", help="module:attr or file.py:attr")],
    id: Annotated[str | None, typer.Option("--id")] = None,  # noqa: A002
    partition_id: int = 0,
    num_partitions: int = 1,
    partitioner: str = "iid",
    seed: int = 0,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    insecure: Annotated[bool, typer.Option(help="for a controller started --insecure")] = False,
    verbose: bool = False,
) -> None:
    """Train and validate on this client's data; its id is its token's subject."""
    from stratafl.client.main import ClientOptions

    options = ClientOptions(
        controller=controller,
        app=app_spec,
        client_id=id,
        partition_id=partition_id,
        num_partitions=num_partitions,
        partitioner=partitioner,
        seed=seed,
        token_file=token_file,
        ca_file=ca_file,
        insecure=insecure,
    )
    _start_tier(options, verbose)
