"""`strata controller|combiner|client start`: each tier from its flags, as typed options.

The flags become the tier's options dataclass and `stratafl.launch.tier.run_tier` runs it,
the same path the launcher takes, so a renamed option is one change in one place.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratafl.cli.admin import CaFile, ControllerUrl, TokenFile
from stratafl.cli.config import Connection, global_options, resolve_connection
from stratafl.controller.rest.rates import DEFAULT_RATE_LIMITS
from stratafl.errors import ConfigError

if TYPE_CHECKING:
    from stratafl.launch.tier import TierOptions

controller_cli = typer.Typer(help="Tier 3: discovery, sessions, reducer, REST API.")
combiner_cli = typer.Typer(help="Tier 2: serves clients and aggregates their updates.")
client_cli = typer.Typer(help="Tier 1: trains on private data.")


def _start_tier(
    options: TierOptions, verbose: bool, *, level: str | None = None, fmt: str | None = None
) -> None:
    """Run the tier, logging at ``--verbose``'s, ``level``'s or the environment's level."""
    from stratafl.launch.tier import run_tier
    from stratafl.logs import configure_logging

    configure_logging("debug" if verbose else level, fmt)
    run_tier(options)


def _check_port(host: str, port: int, flag: str) -> None:
    """Fail before anything starts when ``port`` is taken (port 0 always binds)."""
    if port == 0:
        return
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror:
        return  # the server names a bad host itself
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"port {port} on {host} is already in use: stop what holds it or pick "
                f"another with {flag}"
            ) from exc


def _peer(
    tier: str,
    controller: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    *,
    insecure: bool,
) -> Connection:
    """The controller and credentials from flags, environment or config file; a tier
    reads its token from a file."""
    where = resolve_connection(
        controller=controller, token_file=token_file, ca_file=ca_file, options=global_options()
    )
    if where.token_file is None and where.token is not None and not insecure:
        raise ConfigError(
            f"a {tier} reads its token from a file: pass --token-file (or set "
            "STRATA_TOKEN_FILE, or token_file in the config file)"
        )
    return where


ADVERTISE_HELP = "the name or IP other hosts reach this one at (needed with --host 0.0.0.0)"
VERBOSE_HELP = "log at debug level (the same as strata --log-level debug)"
TLS_CERT_HELP = "serve this PEM certificate (chain after it), an organisation's own"
TLS_KEY_HELP = "the private key of --tls-cert (PEM, unencrypted)"
CA_BUNDLE_HELP = "trust these PEM CA certificates too when dialling (an organisation's CAs)"
TlsCert = Annotated[Path | None, typer.Option(help=TLS_CERT_HELP)]
TlsKey = Annotated[Path | None, typer.Option(help=TLS_KEY_HELP)]
CaBundle = Annotated[Path | None, typer.Option(help=CA_BUNDLE_HELP)]
READY_HELP = "write the tier's address here once it serves (for scripts and `strata health`)"
READY_ENV = "STRATA_READY_FILE"
ReadyFile = Annotated[Path | None, typer.Option(help=READY_HELP, envvar=READY_ENV)]


@controller_cli.command("start")
def controller_start(
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")] = (
        "127.0.0.1"
    ),
    advertise_address: Annotated[str | None, typer.Option(help=ADVERTISE_HELP)] = None,
    port: Annotated[int, typer.Option(help="REST port (0 picks a free one)")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC port for combiners (0 = free)")] = 0,
    workdir: Annotated[Path, typer.Option(help="its state, models and trust/ folder")] = Path(
        ".strata/controller"
    ),
    database_url: Annotated[str | None, typer.Option(help="default: SQLite in workdir")] = None,
    model_store: Annotated[str | None, typer.Option(help="default: workdir/models")] = None,
    ready_file: ReadyFile = None,
    insecure: Annotated[
        bool, typer.Option(help="no TLS and no tokens: allowed on a loopback --host only")
    ] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option(help="another name or address the controller is reached at (repeat)"),
    ] = None,
    keep_last: Annotated[
        int, typer.Option(min=0, help="keep each session's last N models (0: keep all)")
    ] = 10,
    keep_every: Annotated[
        int, typer.Option(min=0, help="keep every N-th round's model (0: keep all)")
    ] = 10,
    mlflow: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI: each session becomes a run (stratafl[mlflow])"),
    ] = None,
    mlflow_experiment: Annotated[
        str, typer.Option(help="the MLflow experiment sessions are logged to")
    ] = "stratafl",
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    ca_bundle: CaBundle = None,
    rest_rate: Annotated[
        float,
        typer.Option(min=0.001, help="REST requests per second one caller may send on average"),
    ] = DEFAULT_RATE_LIMITS.per_second,
    rest_burst: Annotated[
        float, typer.Option(min=1, help="REST requests one caller may send at once")
    ] = DEFAULT_RATE_LIMITS.burst,
    verbose: Annotated[bool, typer.Option(help=VERBOSE_HELP)] = False,
) -> None:
    """Serve the REST API and the combiners' gRPC service, TLS and tokens by default."""
    _check_port(host, port, "--port")
    _check_port(host, grpc_port, "--grpc-port")
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
        tls_hosts=tuple(tls_host or ()),
        keep_last=keep_last,
        keep_every=keep_every,
        mlflow=mlflow,
        mlflow_experiment=mlflow_experiment,
        tls_cert=tls_cert,
        tls_key=tls_key,
        ca_bundle=ca_bundle,
        rest_rate=rest_rate,
        rest_burst=rest_burst,
    )
    _start_tier(options, verbose)


@combiner_cli.command("start")
def combiner_start(
    controller: ControllerUrl = None,
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0: every interface)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="gRPC port for clients (0 picks a free one)")] = 0,
    advertise_address: Annotated[str | None, typer.Option(help=ADVERTISE_HELP)] = None,
    max_clients: Annotated[
        int | None,
        typer.Option(help="clients it serves at most (default: what open files and memory allow)"),
    ] = None,
    id: Annotated[  # noqa: A002
        str | None, typer.Option("--id", help="its id (default: its token's subject)")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="default: .strata/ID")] = None,
    ready_file: ReadyFile = None,
    metrics: Annotated[
        bool, typer.Option(help="serve GET /metrics for Prometheus (admin token, TLS)")
    ] = True,
    metrics_port: Annotated[int, typer.Option(help="port of /metrics (0 picks a free one)")] = 0,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    ca_bundle: CaBundle = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    insecure: Annotated[bool, typer.Option(help="for a controller started --insecure")] = False,
    verbose: Annotated[bool, typer.Option(help=VERBOSE_HELP)] = False,
) -> None:
    """Serve clients and aggregate their updates; its id is its token's subject."""
    from stratafl.combiner.main import CombinerOptions

    peer = _peer("combiner", controller, token_file, ca_file, insecure=insecure)
    _check_port(host, port, "--port")
    _check_port(host, metrics_port, "--metrics-port")
    options = CombinerOptions(
        controller=peer.controller,
        workdir=workdir or Path(".strata") / (id or "combiner"),
        host=host,
        port=port,
        advertise_address=advertise_address,
        max_clients=max_clients,
        combiner_id=id,
        ready_file=ready_file,
        token_file=peer.token_file,
        ca_file=peer.ca_file,
        insecure=insecure,
        metrics=metrics,
        metrics_port=metrics_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        ca_bundle=ca_bundle,
    )
    _start_tier(options, verbose)


SITE_HELP = "the site's own TOML file (docs/configuration.md); the flags given override it"


@client_cli.command("start")
def client_start(
    app_spec: Annotated[
        str | None,
        typer.Option("--app", help="the client app: module:attr or file.py:attr"),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help=SITE_HELP)] = None,
    controller: ControllerUrl = None,
    id: Annotated[  # noqa: A002
        str | None, typer.Option("--id", help="its id (default: its token's subject)")
    ] = None,
    data_path: Annotated[
        Path | None, typer.Option(help="where this site's data is (the app's context.data_path)")
    ] = None,
    combiner: Annotated[
        list[str] | None,
        typer.Option(
            "--combiner",
            help="accept only this combiner (repeat for several; the first is asked for); "
            "an assignment elsewhere is refused",
        ),
    ] = None,
    partition_id: Annotated[int, typer.Option(help="which share of the data is this client's")] = 0,
    num_partitions: Annotated[int, typer.Option(help="how many shares the data is split in")] = 1,
    partition: Annotated[
        str,
        typer.Option(
            help="iid | dirichlet:ALPHA | shards:S, optionally +shared:F (all share F of the data)"
        ),
    ] = "iid",
    partitioner: Annotated[
        str | None, typer.Option(hidden=True, help="the old name of --partition")
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the partition (the same at every client)")] = 0,
    attack: Annotated[
        str | None,
        typer.Option(
            help="make this client malicious, for experiments: label_flip, backdoor, scale, "
            "sign_flip or noise[:k=v,...] (stratafl.attacks)"
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="keeps what must survive a restart (top-k's residuals); none: memory"),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve GET /metrics on this port (0: a free one; default: not at all)"),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(help="address /metrics binds [default: 127.0.0.1; others need --tls-cert]"),
    ] = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    allow_app: Annotated[
        list[str] | None,
        typer.Option(
            help="the SHA-256 of an app package this site runs when a session names it "
            "(repeat; docs/apps.md)"
        ),
    ] = None,
    ready_file: ReadyFile = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
    ca_bundle: CaBundle = None,
    insecure: Annotated[bool, typer.Option(help="for a controller started --insecure")] = False,
    verbose: Annotated[bool, typer.Option(help=VERBOSE_HELP)] = False,
) -> None:
    """Train and validate on this client's data; its id is its token's subject."""
    from stratafl.attacks import parse_attack
    from stratafl.client.main import ClientOptions
    from stratafl.client.site import SiteConfig, load_site_config
    from stratafl.data import parse_partitioner

    site = load_site_config(config) if config is not None else SiteConfig()
    app_spec = app_spec or site.app
    if app_spec is None:
        raise ConfigError("pass --app module:attr (or app in the site file of --config)")
    peer = _peer(
        "client",
        controller or site.controller,
        token_file or site.token_file,
        ca_file or site.ca_file,
        insecure=insecure,
    )
    parse_partitioner(partitioner or partition)
    if attack is not None:
        parse_attack(attack)
    options = ClientOptions(
        controller=peer.controller,
        app=app_spec,
        client_id=id,
        partition_id=partition_id,
        num_partitions=num_partitions,
        partitioner=partitioner or partition,
        seed=seed,
        attack=attack,
        workdir=workdir or site.workdir,
        allowed_apps=tuple(allow_app) if allow_app else site.allow_apps,
        ready_file=ready_file,
        token_file=peer.token_file,
        ca_file=peer.ca_file,
        ca_bundle=ca_bundle or site.ca_bundle,
        insecure=insecure,
        accepted_combiners=tuple(combiner) if combiner else site.combiners,
        data_path=data_path or site.data_path,
        settings=site.settings,
        metrics_port=metrics_port if metrics_port is not None else site.metrics_port,
        metrics_host=metrics_host or site.metrics_host or "127.0.0.1",
        tls_cert=tls_cert or site.tls_cert,
        tls_key=tls_key or site.tls_key,
    )
    given = global_options()
    level, fmt = given.log_level or site.log_level, given.log_format or site.log_format
    _start_tier(options, verbose, level=level, fmt=fmt)


def health(
    ready_file: Annotated[
        Path,
        typer.Option(help="the ready file the tier was started with", envvar=READY_ENV),
    ],
) -> None:
    """Exit 0 if the tier of this ready file serves (a container's health check)."""
    from stratafl.launch.readiness import check_ready

    print(check_ready(ready_file))
