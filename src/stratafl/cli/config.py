"""`strata`'s global options, and where its commands find the controller and the caller's
credentials: flags over the environment over the config file, by the rules of
`stratafl.restapi.environment` (which `ControllerClient.from_environment` follows too).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from stratafl.restapi import environment
from stratafl.restapi.environment import (
    CONFIG_ENV,
    ENV,
    KEYS,
    PROFILE_ENV,
    Connection,
    default_config_path,
    load_config,
)

__all__ = [
    "CONFIG_ENV",
    "ENV",
    "KEYS",
    "PROFILE_ENV",
    "Connection",
    "GlobalOptions",
    "default_config_path",
    "global_options",
    "load_config",
    "resolve_connection",
    "use_global_options",
]


@dataclass
class GlobalOptions:
    """The root command's options, for the commands under it and for the error boundary."""

    debug: bool = False
    config: Path | None = None
    profile: str | None = None
    log_level: str | None = None
    """``--log-level`` when given (a site file's ``log_level`` yields to it)."""
    log_format: str | None = None


_GLOBAL_OPTIONS: ContextVar[GlobalOptions | None] = ContextVar("strata_options", default=None)


def use_global_options(options: GlobalOptions) -> None:
    """Called once by `strata`'s root callback, before the command runs."""
    _GLOBAL_OPTIONS.set(options)


def global_options() -> GlobalOptions:
    """The root command's options for the command running now (the defaults outside one,
    e.g. when a test calls a command function directly)."""
    return _GLOBAL_OPTIONS.get() or GlobalOptions()


def resolve_connection(
    *,
    controller: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    ca_file: Path | None = None,
    options: GlobalOptions | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """Flags (the arguments) over the environment over the config file that ``options``
    (``--config``, ``--profile``) name."""
    options = options or GlobalOptions()
    return environment.resolve_connection(
        controller=controller,
        token=token,
        token_file=token_file,
        ca_file=ca_file,
        config_file=options.config,
        profile=options.profile,
        environ=environ,
    )
