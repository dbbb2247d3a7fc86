"""`strata`: start each tier, or a whole local federation with `strata run` / `strata demo`.

The commands only parse their flags and print: each tier starts from its typed options
(`stratafl.launch.tier`), a whole run is `stratafl.launch.run.run_federation`, and whatever a
command raises becomes one line and exit code 2 in `stratafl.cli.errors`.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stratafl import __version__
from stratafl.cli.admin import app_cli, audit_cli, db_cli, model_seed, token_cli
from stratafl.cli.config import CONFIG_ENV, PROFILE_ENV, GlobalOptions, use_global_options
from stratafl.cli.errors import run as run_cli
from stratafl.cli.experiment import experiment_cli
from stratafl.cli.operator import client_list, combiner_list, model_cli, session_cli
from stratafl.cli.run import demo, run
from stratafl.cli.swarm import swarm
from stratafl.cli.tiers import client_cli, combiner_cli, controller_cli, health
from stratafl.logs import LogFormat, configure_logging

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="stratafl: three-tier federated learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: 'stratafl[mlflow]' keeps its brackets
)
app.add_typer(controller_cli, name="controller")
app.add_typer(combiner_cli, name="combiner")
app.add_typer(client_cli, name="client")
app.add_typer(token_cli, name="token")
app.add_typer(audit_cli, name="audit")
app.add_typer(session_cli, name="session")
app.add_typer(model_cli, name="model")
app.add_typer(db_cli, name="db")
app.add_typer(app_cli, name="app")
app.add_typer(experiment_cli, name="experiment")
combiner_cli.command("list")(combiner_list)
client_cli.command("list")(client_list)
model_cli.command("seed")(model_seed)
app.command("seed", hidden=True)(model_seed)  # the old name of `strata model seed`
app.command("run")(run)
app.command("demo")(demo)
app.command("swarm")(swarm)
app.command("health")(health)


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _version(shown: bool) -> None:
    if shown:
        print(f"stratafl {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="on an error, show its traceback instead of one line")
    ] = False,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(help="log this much (default info); tiers `strata run` starts inherit it"),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(help="text for people, json for log shippers (default text)"),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar=CONFIG_ENV,
            help="a TOML file of controller, token, token_file, ca_file "
            "(default ~/.config/stratafl/config.toml if it exists)",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(envvar=PROFILE_ENV, help="use the config file's [profiles.NAME] table"),
    ] = None,
) -> None:
    """stratafl: three-tier federated learning."""
    options = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
    options.debug, options.config, options.profile = debug, config, profile
    options.log_level, options.log_format = log_level, log_format
    ctx.obj = options
    use_global_options(options)
    if log_level is not None or log_format is not None:
        configure_logging(log_level, log_format)


def main(args: list[str] | None = None) -> None:
    """The `strata` command: exit code 0, 2 for a mistake (one line on stderr), 130 on Ctrl-C."""
    sys.exit(run_cli(app, args))


if __name__ == "__main__":
    main()
