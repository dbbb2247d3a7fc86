"""`strata swarm`: many light clients over a few processes, for fleets and load tests.

The flags become `SwarmOptions`; `stratafl.swarm.Fleet` does the rest. The controller and
the credentials come from flags, the environment or the config file, as for every
command: the token is the admin's (the swarm mints one client token per client) unless
``--tokens-file`` hands it the clients' own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratafl.cli.admin import CaFile, ControllerUrl, TokenFile
from stratafl.cli.config import global_options, resolve_connection
from stratafl.errors import ConfigError

if TYPE_CHECKING:
    from stratafl.swarm import SwarmStats

__all__ = ["swarm"]


def _line(stats: SwarmStats) -> str:
    return (
        f"clients {stats.clients}  connected {stats.connected}  tasks {stats.tasks}  "
        f"accepted {stats.updates_accepted}  refused {stats.updates_refused}  "
        f"validated {stats.validations}  app failures {stats.app_failures}  "
        f"stream errors {stats.stream_errors}  assign errors {stats.assign_errors}  "
        f"RSS {stats.rss_bytes / 2**20:.0f} MiB ({stats.bytes_per_client() / 1024:.1f} kB/client)"
    )


def swarm(
    clients: Annotated[int, typer.Option(help="how many clients to run")],
    controller: ControllerUrl = None,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="the client app: module:attr or file.py:attr "
            "(default: stratafl.apps.noise:make_app, a 70 kB model and no data)",
        ),
    ] = None,
    processes: Annotated[int, typer.Option(help="processes the clients are spread over")] = 1,
    token_file: TokenFile = None,
    tokens_file: Annotated[
        Path | None,
        typer.Option(help="client tokens, one per line, instead of minting them with an admin's"),
    ] = None,
    save_tokens: Annotated[
        Path | None, typer.Option(help="write the minted client tokens here (owner-only)")
    ] = None,
    ca_file: CaFile = None,
    insecure: Annotated[bool, typer.Option(help="for a controller started --insecure")] = False,
    id_prefix: Annotated[str, typer.Option(help="client ids are PREFIX-0, PREFIX-1, ...")] = (
        "swarm"
    ),
    app_per_client: Annotated[
        bool,
        typer.Option(help="one app per client, each on its partition (default: one per process)"),
    ] = False,
    connecting: Annotated[
        int, typer.Option(help="clients of a process connecting at the same time")
    ] = 200,
    duration: Annotated[
        float | None, typer.Option(help="seconds to run (default: until Ctrl-C or SIGTERM)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seeds the apps and the backoff jitter")] = 0,
    stats_seconds: Annotated[
        float, typer.Option(help="print the totals this often (0: only at the end)")
    ] = 5.0,
) -> None:
    """Run many light clients (asyncio gRPC, several processes), each a real client."""
    from stratafl.swarm import DEFAULT_APP, Fleet, SwarmOptions, SwarmStats, follow

    where = resolve_connection(
        controller=controller, token_file=token_file, ca_file=ca_file, options=global_options()
    )
    if where.token_file is None and where.token is not None and tokens_file is None:
        raise ConfigError(
            "strata swarm reads the admin token from a file: pass --token-file (or set "
            "STRATA_TOKEN_FILE, or token_file in the config file)"
        )
    options = SwarmOptions(
        controller=where.controller,
        clients=clients,
        app=app_spec or DEFAULT_APP,
        processes=processes,
        id_prefix=id_prefix,
        token_file=None if insecure or tokens_file else where.token_file,
        tokens_file=tokens_file,
        save_tokens=save_tokens,
        ca_file=None if insecure else where.ca_file,
        insecure=insecure,
        app_per_client=app_per_client,
        connecting=connecting,
        duration=duration,
        seed=seed,
        stats_seconds=stats_seconds,
    )
    with Fleet(options) as fleet:
        fleet.start()
        print(f"swarm: {clients} clients in {processes} processes -> {options.controller}")
        follow(fleet, lambda stats: print(_line(stats), flush=True), stats_seconds)
        final = sum(fleet.stop(), SwarmStats())
    print(_line(final))
