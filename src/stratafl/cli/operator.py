"""`strata session|model ...`, `strata combiner|client list`: operate a federation from a shell.

Every command reaches the controller as `admin_cli.connect` does (flags or ``STRATA_*``
variables), and every list prints a table or, with ``--format json``, the records as JSON
(one array of every page, the REST API's own records), so scripts need no second API.
`strata session watch` follows a session's event stream live (`stratafl.cli.session_watch`).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from stratafl.cli.admin import CaFile, ControllerUrl, Token, TokenFile, connect
from stratafl.cli.console import console
from stratafl.cli.listing import Format, FormatOption, show, when
from stratafl.cli.session_watch import watch_events, watch_json
from stratafl.errors import ConfigError
from stratafl.restapi import Session
from stratafl.settings import AppSettingValue, SessionConfig

SessionId = Annotated[
    str, typer.Argument(help="the id shown by `strata session list`, or a unique prefix")
]

session_cli = typer.Typer(help="Start, stop, list and inspect training sessions (admin).")
model_cli = typer.Typer(help="Seed, list and download the models of the trail (admin).")

SESSION_COLUMNS: dict[str, Callable[[Session], object]] = {
    "id": lambda s: s.id,
    "status": lambda s: s.status,
    "rounds": lambda s: f"{s.rounds_done}/{s.config.rounds}",
    "final model": lambda s: s.final_model_id or "",
    "started": lambda s: when(s.created_at),
    "reason": lambda s: s.reason,
}


def _default(setting: str) -> object:
    """The value a session gets for ``setting`` when neither a flag nor the file gives it."""
    return SessionConfig.model_fields[setting].default


def session_settings(file_settings: dict[str, object], flags: dict[str, object]) -> SessionConfig:
    """The settings file's values with the flags given on top.

    A flag left out is ``None`` and keeps the file's value (or the setting's default), so
    ``--settings`` is never overwritten by a flag the user did not type.
    """
    from stratafl.launch.preflight import check_aggregator  # loads the rules: only here

    given = {setting: value for setting, value in flags.items() if value is not None}
    merged = {**file_settings, **given}
    if isinstance(merged.get("aggregator"), str):  # a typo gets strata run's "did you mean"
        check_aggregator(str(merged["aggregator"]))
    return SessionConfig.model_validate(merged)


def app_setting(text: str) -> tuple[str, AppSettingValue]:
    """``KEY=VALUE`` from ``--app-setting``: the value read as a TOML value when it is one
    (``1`` an int, ``0.5`` a float, ``true`` a bool, ``"x"`` a string), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--app-setting {text!r} must look like KEY=VALUE, e.g. cohort=a")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if not isinstance(value, bool | int | float | str):
        value = raw
    return key.strip(), value


@session_cli.command("start")
def session_start(
    controller: ControllerUrl = None,
    rounds: Annotated[
        int | None, typer.Option(help=f"rounds in the session [default: {_default('rounds')}]")
    ] = None,
    min_clients: Annotated[
        int | None,
        typer.Option(help=f"a round with fewer updates fails [default: {_default('min_clients')}]"),
    ] = None,
    aggregator: Annotated[
        str | None,
        typer.Option(
            help="RULE[:k=v,...][+OPTIMISER[:k=v,...]], see docs/aggregators.md "
            f"[default: {_default('aggregator')}]"
        ),
    ] = None,
    seed_model: Annotated[
        str | None, typer.Option(help="a model id or a unique prefix; default: the newest model")
    ] = None,
    settings: Annotated[
        Path | None, typer.Option(help="a JSON file of session settings (docs/configuration.md)")
    ] = None,
    app_settings: Annotated[
        list[str] | None,
        typer.Option(
            "--app-setting",
            help="KEY=VALUE the app gets in every task's config (repeat; VALUE typed as TOML: "
            "1, 0.5, true, or text)",
        ),
    ] = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Start a session; the flags given override the settings file."""
    from_file = json.loads(settings.read_text()) if settings is not None else {}
    given = dict(app_setting(text) for text in app_settings or ())
    config = session_settings(
        from_file,
        {
            "rounds": rounds,
            "min_clients": min_clients,
            "aggregator": aggregator,
            "seed_model_id": seed_model,
            "app_settings": {**from_file.get("app_settings", {}), **given} if given else None,
        },
    )
    with connect(controller, token, token_file, ca_file) as api:
        show([api.start_session(config)], output, SESSION_COLUMNS)


@session_cli.command("list")
def session_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Every session, oldest first."""
    with connect(controller, token, token_file, ca_file) as api:
        show(api.sessions(), output, SESSION_COLUMNS)


@session_cli.command("show")
def session_show(
    session_id: Annotated[
        str, typer.Argument(help="the id shown by `strata session list`, or a unique prefix")
    ],
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """One session and a line per round."""
    with connect(controller, token, token_file, ca_file) as api:
        session, rounds = api.session(session_id), api.rounds(session_id)
    if output is Format.JSON:
        body = {
            "session": session.model_dump(mode="json"),
            "rounds": [r.model_dump(mode="json") for r in rounds],
        }
        print(json.dumps(body, indent=2))
        return
    show([session], output, SESSION_COLUMNS)
    show(
        rounds,
        output,
        {
            "round": lambda r: r.number,
            "status": lambda r: r.status,
            "clients": lambda r: len(r.participants),
            "accuracy": lambda r: r.validation.mean("accuracy") or "",
            "seconds": lambda r: f"{r.duration:.2f}",
            "reason": lambda r: r.reason,
        },
    )


@session_cli.command("stop")
def session_stop(
    session_id: Annotated[
        str, typer.Argument(help="the id shown by `strata session list`, or a unique prefix")
    ],
    controller: ControllerUrl = None,
    cancel: Annotated[bool, typer.Option(help="end now, dropping the round in flight")] = False,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """End a session after the round in flight (or at once with --cancel)."""
    with connect(controller, token, token_file, ca_file) as api:
        record = api.cancel_session(session_id) if cancel else api.stop_session(session_id)
    console.print(f"session {record.id}: {record.status} {record.reason}".rstrip())


@session_cli.command("watch")
def session_watch(
    session_id: Annotated[
        str, typer.Argument(help="the id shown by `strata session list`, or a unique prefix")
    ],
    controller: ControllerUrl = None,
    after: Annotated[
        int | None, typer.Option(help="start after this event id (default: from its start)")
    ] = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Follow a session live: a bar over its rounds and a line per round, until it ends
    (exit code 0 if it finished or was stopped, 1 if it failed or was cancelled)."""
    with connect(controller, token, token_file, ca_file) as api:
        events = api.follow(session_id, after=after)
        if output is Format.JSON:
            code = watch_json(events)
        else:
            code = watch_events(api.session(session_id), events, console)
    raise typer.Exit(code)


@model_cli.command("list")
def model_list(
    controller: ControllerUrl = None,
    session: Annotated[
        str | None, typer.Option(help="only this session's models (its id or a unique prefix)")
    ] = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """The models of the trail, oldest first."""
    with connect(controller, token, token_file, ca_file) as api:
        models = api.models(session)
    show(
        models,
        output,
        {
            "id": lambda m: m.id,
            "parent": lambda m: m.parent_id or "",
            "session": lambda m: m.session_id or "",
            "round": lambda m: m.round or "",
            "MB": lambda m: f"{m.size_bytes / 1e6:.2f}",
            "created": lambda m: when(m.created_at),
        },
    )


@model_cli.command("download")
def model_download(
    model_id: Annotated[
        str, typer.Argument(help="the id shown by `strata model list`, or a unique prefix")
    ],
    controller: ControllerUrl = None,
    to: Annotated[
        Path | None, typer.Option(help="default: ./MODEL_ID.safetensors (the whole id)")
    ] = None,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """Save a model as a safetensors file (it opens with the stock safetensors library)."""
    with connect(controller, token, token_file, ca_file) as api:
        model_id = api.model(model_id).id  # a prefix names the file by the whole id
        path = api.download_model(model_id, to or Path(f"{model_id}.safetensors"))
    console.print(str(path))


def combiner_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """The combiners, their address, status and load."""
    with connect(controller, token, token_file, ca_file) as api:
        combiners = api.combiners()
    show(
        combiners,
        output,
        {
            "id": lambda c: c.id,
            "address": lambda c: c.address,
            "status": lambda c: c.status,
            "clients": lambda c: f"{c.num_clients}/{c.max_clients}",
            "last heartbeat": lambda c: when(c.last_heartbeat),
        },
    )


def client_list(
    controller: ControllerUrl = None,
    output: FormatOption = Format.TABLE,
    token: Token = None,
    token_file: TokenFile = None,
    ca_file: CaFile = None,
) -> None:
    """The clients, the combiner each is on, and their status."""
    with connect(controller, token, token_file, ca_file) as api:
        clients = api.clients()
    show(
        clients,
        output,
        {
            "id": lambda c: c.id,
            "combiner": lambda c: c.combiner_id or "",
            "status": lambda c: c.status,
            "last seen": lambda c: when(c.last_seen),
        },
    )
