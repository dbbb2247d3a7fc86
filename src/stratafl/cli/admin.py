"""`strata token ...`, `strata audit list`, `strata model seed`, and how every admin command
reaches the controller.

The controller's URL, the caller's token and the federation's CA come from flags, from the
environment (``STRATA_CONTROLLER``, ``STRATA_TOKEN`` or ``STRATA_TOKEN_FILE``,
``STRATA_CA_FILE``) or from a config file, in that order (`stratafl.cli.config`), so a shell
set up once needs none of them. `connect` applies that order for every command.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer

from stratafl.cli.config import global_options
from stratafl.cli.console import console
from stratafl.cli.listing import Format, FormatOption, show, when
from stratafl.client.app import ClientContext, load_app
from stratafl.errors import ConfigError, UnavailableError
from stratafl.restapi import ControllerClient
from stratafl.security import Role
from stratafl.security.files import write_private

ControllerUrl = Annotated[
    str | None,
    typer.Option(
        "--controller",
        help="the controller's URL, e.g. https://127.0.0.1:8080 "
        "(or $STRATA_CONTROLLER, or controller in the config file)",
    ),
]
Token = Annotated[
    str | None,
    typer.Option("--token", help="your token (or $STRATA_TOKEN, or token in the config file)"),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="a file holding your token, e.g. the controller's trust/admin.token "
        "(or $STRATA_TOKEN_FILE, or token_file in the config file)",
    ),
]
CaFile = Annotated[
    Path | None,
    typer.Option(
        "--ca-file",
        help="the federation's CA certificate, the controller's trust/ca.crt "
        "(or $STRATA_CA_FILE, or ca_file in the config file)",
    ),
]


@contextlib.contextmanager
def connect(
    controller: str | None,
    token: str | None,
    token_file: Path | None,
    ca_file: Path | None,
) -> Iterator[ControllerClient]:
    """A REST client as the caller these options (or the environment, or the config file)
    name; a controller that cannot be reached is one `UnavailableError` naming the fix."""
    options = global_options()
    api = ControllerClient.from_environment(
        controller,
        token=token,
        token_file=token_file,
        ca_file=ca_file,
        config_file=options.config,
        profile=options.profile,
        timeout=60,
    )
    with api:
        try:
            yield api
        except UnavailableError as exc:
            better = unreachable(api.url, exc)
            if better is exc:
                raise
            raise better from exc


def unreachable(url: str, exc: UnavailableError) -> UnavailableError:
    """What to do about a controller that did not answer: start it, or fix the URL or CA
    (``exc`` itself when it is not about the connection)."""
    cause = exc.__cause__
    if not isinstance(cause, httpx.TransportError):
        return exc
    if "CERTIFICATE_VERIFY_FAILED" in str(cause):
        return UnavailableError(
            f"the controller at {url} has a certificate this CA did not sign: pass the "
            "federation's CA with --ca-file (the controller's trust/ca.crt)"
        )
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
        return UnavailableError(
            f"cannot reach the controller at {url}: start it (strata controller start) "
            "or check --controller"
        )
    return UnavailableError(f"the controller at {url} did not answer ({cause}): see its log")


def model_seed(
    app_spec: Annotated[
        str, typer.Option("--app", help="the client app: module:attr or file.py:attr")
    ],
    seed: Annotated[int, typer.Option(help="the seed of the app's initial_params")] = 0,
    controller: ControllerUrl = None,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Upload the app's freshly initialised model: the seed of the next session."""
    app = load_app(app_spec, ClientContext(num_partitions=1, seed=seed))
    with connect(controller, token, token_file, ca_file) as api:
        record = api.upload_model(app.initial_params(seed))
    console.print(record.id)


token_cli = typer.Typer(help="Issue, list and revoke tokens (needs an admin token).")

ISSUED_ROLES = (Role.ADMIN, Role.VIEWER, Role.METRICS, Role.COMBINER, Role.CLIENT)
"""What `strata token create --role` issues; the controller makes its own token."""


@token_cli.command("create")
def token_create(
    role: Annotated[
        Role,
        typer.Option(
            help="admin (runs everything), viewer (reads everything, changes nothing), "
            "metrics (Prometheus: GET /metrics only), combiner or client"
        ),
    ],
    name: Annotated[str, typer.Option(help="a label, e.g. hospital-3; also the identity")],
    controller: ControllerUrl = None,
    subject: Annotated[str | None, typer.Option(help="the identity (default: the name)")] = None,
    days: Annotated[
        float | None,
        typer.Option(help="how long it is valid (default: 1 for clients and combiners, 30 admin)"),
    ] = None,
    max_examples: Annotated[
        int | None, typer.Option(help="a client's cap on the examples it may claim")
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(
            help="a name or address the combiner serves under: the only hosts its "
            "certificate may name (repeat; no wildcards)"
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="write the token to this file, readable by you only (mode 0600)"),
    ] = None,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Print a new token on stdout, or write it to --out FILE (mode 0600): its only copy.
    Its id goes to stderr."""
    if role is Role.CONTROLLER:
        raise ConfigError(f"the controller issues its own token; choose {', '.join(ISSUED_ROLES)}")
    if host and role is not Role.COMBINER:
        raise ConfigError("only a combiner serves: --host goes with --role combiner")
    with connect(controller, token, token_file, ca_file) as api:
        issued = api.create_token(
            name,
            role,
            subject=subject,
            ttl_seconds=None if days is None else days * 86400.0,
            max_examples=max_examples,
            hosts=host or (),
        )
    if out is None:
        print(issued.token)
    else:
        write_private(out, issued.token.encode() + b"\n")
    expires = datetime.fromtimestamp(issued.record.expires_at, UTC).isoformat(timespec="minutes")
    print(
        f"token {issued.record.token_id} for {role} {issued.record.subject}, valid until {expires}",
        file=sys.stderr,
    )


@token_cli.command("list")
def token_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Every token issued: id, name, role, subject, expiry, revoked (never a token itself)."""
    with connect(controller, token, token_file, ca_file) as api:
        records = api.tokens()
    show(
        records,
        output,
        {
            "id": lambda t: t.token_id,
            "name": lambda t: t.name,
            "role": lambda t: t.role,
            "subject": lambda t: t.subject,
            "expires": lambda t: when(t.expires_at),
            "revoked": lambda t: "yes" if t.revoked_at else "",
        },
    )


@token_cli.command("revoke")
def token_revoke(
    token_id: Annotated[
        str, typer.Argument(help="the id shown by `strata token list`, or a unique prefix")
    ],
    controller: ControllerUrl = None,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Revoke a token: the controller refuses it at once, combiners within a heartbeat."""
    with connect(controller, token, token_file, ca_file) as api:
        record = api.revoke_token(token_id)
    console.print(f"revoked {record.token_id} ({record.role} {record.subject})")


app_cli = typer.Typer(help="App packages the controller ships to the clients of a session.")


@app_cli.command("publish")
def app_publish(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="the app's wheel, .tar.gz or .zip"),
    ],
    controller: ControllerUrl = None,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Publish an app package; prints its SHA-256, which a session names as app_sha256
    and each site allows with `strata client start --allow-app SHA256`."""
    with connect(controller, token, token_file, ca_file) as api:
        record = api.publish_app(file)
    console.print(record.sha256)


@app_cli.command("list")
def app_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Every app package the controller holds: digest, file name, size."""
    with connect(controller, token, token_file, ca_file) as api:
        records = api.apps()
    show(
        records,
        output,
        {
            "sha256": lambda a: a.sha256,
            "file": lambda a: a.filename,
            "bytes": lambda a: str(a.size_bytes),
        },
    )


audit_cli = typer.Typer(help="The audit log of admin actions (admins and viewers).")


@audit_cli.command("list")
def audit_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Who issued and revoked tokens, started, stopped and cancelled sessions and uploaded
    models, and when; oldest first."""
    with connect(controller, token, token_file, ca_file) as api:
        records = api.audit()
    show(
        records,
        output,
        {
            "when": lambda a: when(a.time),
            "who": lambda a: a.actor,
            "action": lambda a: a.action,
            "target": lambda a: a.target,
            "detail": lambda a: " ".join(f"{k}={v}" for k, v in a.detail.items()),
        },
    )


db_cli = typer.Typer(help="The controller's state database.")


@db_cli.command("upgrade")
def db_upgrade(
    database_url: Annotated[
        str | None, typer.Option(help="any SQLAlchemy URL; default: SQLite in --workdir")
    ] = None,
    workdir: Annotated[Path, typer.Option(help="the controller's work folder")] = Path(
        ".strata/controller"
    ),
) -> None:
    """Migrate the controller's database to this version's schema (also done at each start)."""
    from stratafl.store.migrations import migrated_engine
    from stratafl.store.tables import sqlite_url

    if database_url is None and not (workdir / "state.db").is_file():
        raise ConfigError(
            f"there is no controller database in {workdir}: pass the controller's "
            "--workdir, or its --database-url"
        )
    engine, done = migrated_engine(database_url or sqlite_url(workdir))
    engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    console.print(f"{where}: {done.describe()}")
