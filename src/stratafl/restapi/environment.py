"""Where a caller of the controller's REST API finds it and its own credentials: the same
rules for `strata` and for `ControllerClient.from_environment`.

Each setting comes from the first source that gives it: an explicit value (a flag, an
argument), then the environment (``STRATA_CONTROLLER``, ``STRATA_TOKEN`` or
``STRATA_TOKEN_FILE``, ``STRATA_CA_FILE``), then a TOML config file: the one named
(``--config FILE``, an argument, or ``STRATA_CONFIG``), else
``~/.config/stratafl/config.toml`` if it exists::

    controller = "https://127.0.0.1:8080"
    token_file = "trust/admin.token"     # relative paths: relative to this file's folder
    ca_file = "trust/ca.crt"

    [profiles.lab]                       # --profile lab (or STRATA_PROFILE=lab)
    controller = "https://lab.example.org:8080"

A profile's keys override the top level's. The token and the token file are one setting
(the caller's credential): the first source that gives either wins, so a ``--token-file``
flag is never shadowed by a ``STRATA_TOKEN`` left in the shell.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stratafl.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "ENV",
    "KEYS",
    "PROFILE_ENV",
    "Connection",
    "default_config_path",
    "load_config",
    "resolve_connection",
]

KEYS = ("controller", "token", "token_file", "ca_file")
ENV: Mapping[str, str] = {
    "controller": "STRATA_CONTROLLER",
    "token": "STRATA_TOKEN",
    "token_file": "STRATA_TOKEN_FILE",
    "ca_file": "STRATA_CA_FILE",
}
CONFIG_ENV = "STRATA_CONFIG"
PROFILE_ENV = "STRATA_PROFILE"
_PATH_KEYS = ("token_file", "ca_file")


@dataclass(frozen=True, kw_only=True)
class Connection:
    """How to reach the controller, once every source was consulted."""

    controller: str
    token: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/stratafl/config.toml``, by default under ``~/.config``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stratafl" / "config.toml"


def load_config(where: Path, profile: str | None = None, *, named: bool = True) -> dict[str, str]:
    """The settings of the config file at ``where`` (a profile's over the top level's).

    A file that was not ``named`` (the default one) may be absent: {}. Path values come
    back relative to the file's folder, so the file works from any working directory.
    """
    if not named and not where.is_file():
        if profile:
            raise ConfigError(
                f"--profile {profile!r} needs a config file: write {where} or pass --config FILE"
            )
        return {}
    try:
        data = tomllib.loads(where.read_text())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file {where} ({exc.strerror}); pass an existing file to "
            f"--config, or unset {CONFIG_ENV}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {where} is not valid TOML ({exc}); fix that line") from exc
    profiles = data.pop("profiles", {})
    settings = _settings(data, f"config file {where}")
    if profile:
        if not isinstance(profiles, dict) or profile not in profiles:
            names = sorted(profiles) if isinstance(profiles, dict) else []
            raise ConfigError(
                f"config file {where} has no [profiles.{profile}]; its profiles: "
                f"{', '.join(names) or 'none'}"
            )
        chosen = _settings(profiles[profile], f"[profiles.{profile}] of {where}")
        if "token" in chosen or "token_file" in chosen:  # one credential, as across sources
            settings = {k: v for k, v in settings.items() if k not in ("token", "token_file")}
        settings |= chosen
    for key in _PATH_KEYS:
        if key in settings:
            settings[key] = str(where.parent / Path(settings[key]).expanduser())
    return settings


def _settings(table: object, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of {', '.join(KEYS)}")
    for key, value in table.items():
        if key not in KEYS:
            raise ConfigError(
                f"{where}: unknown key {key!r}; the keys are {', '.join(KEYS)} and "
                "[profiles.NAME] tables"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return dict(table)


def resolve_connection(
    *,
    controller: str | None = None,
    token: str | None = None,
    token_file: Path | None = None,
    ca_file: Path | None = None,
    config_file: Path | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """The arguments over the environment over the config file (module docstring);
    ``config_file`` and ``profile`` name the file and its profile (else the environment's,
    else the default file)."""
    flags = {
        key: str(value)
        for key, value in zip(KEYS, (controller, token, token_file, ca_file), strict=True)
        if value is not None
    }
    env = {key: environ[name] for key, name in ENV.items() if environ.get(name)}
    named = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    config_path = named or default_config_path(environ)
    profile = profile or environ.get(PROFILE_ENV) or None
    config = load_config(config_path, profile, named=named is not None)
    sources = (flags, env, config)
    url = next((source["controller"] for source in sources if "controller" in source), None)
    if url is None:
        raise ConfigError(
            "no controller URL: pass --controller URL, set STRATA_CONTROLLER, or put "
            f'controller = "URL" in {config_path}'
        )
    credential = next((s for s in sources if "token" in s or "token_file" in s), {})
    ca = next((source["ca_file"] for source in sources if "ca_file" in source), None)
    return Connection(
        controller=url,
        token=credential.get("token"),
        token_file=Path(credential["token_file"]) if "token_file" in credential else None,
        ca_file=Path(ca) if ca is not None else None,
    )
