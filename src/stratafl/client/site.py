"""A site's own configuration: one TOML file that says how this client runs here.

``strata client start --config site.toml`` reads it; the flags given on the command line
override it key by key. It holds what an organisation decides for its site, not what
the federation's admin decides for a session: where the data is, the app and its
settings, which combiners may see this site's updates, the credentials' paths, how it
logs and whether it serves metrics::

    controller = "https://ctl.example.org:8443"
    app = "my_app.py:make_app"
    data_path = "/srv/cohort-a"                # relative paths: to this file's folder
    token_file = "hospital-3.token"
    ca_bundle = "hospital-ca.pem"
    combiners = ["edge-hospital"]              # the only combiners this site accepts
    allow_apps = ["9f2c...64 hex digits"]      # app packages this site runs (docs/apps.md)
    log_format = "json"
    metrics_port = 9464                        # GET /metrics (admin token); off without

    [settings]                                 # the app's own: ClientContext.settings
    cohort = "a"
    max_epochs = 5

A key this version does not know, or a value of the wrong type, is refused with one line
naming the key and the fix: a typo must not leave a site running on a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic import ValidationError as PydanticValidationError

from stratafl.errors import ConfigError
from stratafl.settings import SHA256_PATTERN, AppSetting, AppSettingValue, check_app_settings

__all__ = ["MAX_ACCEPTED_COMBINERS", "SiteConfig", "load_site_config"]

MAX_ACCEPTED_COMBINERS = 100
MAX_ALLOWED_APPS = 100
MAX_SITE_FILE_BYTES = 1 << 20

_Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
_Digest = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]

_FIXES = {
    "controller": 'a quoted URL, e.g. controller = "https://ctl.example.org:8443"',
    "app": 'a quoted module:attr or file.py:attr, e.g. app = "my_app.py:make_app"',
    "combiners": 'a list of quoted combiner ids, e.g. combiners = ["edge-1"]',
    "allow_apps": "a list of quoted SHA-256 digests (64 lowercase hex digits each), as "
    "strata app publish prints them",
    "log_level": 'one of "debug", "info", "warning", "error"',
    "log_format": '"text" or "json"',
    "metrics_port": "a whole number from 0 to 65535, without quotes (0: a free port)",
    "settings": "a [settings] table of strings, integers, floats and booleans",
}
_PATH_KEYS = ("token_file", "ca_file", "ca_bundle", "data_path", "workdir", "tls_cert", "tls_key")


class _SiteFile(BaseModel):
    """The file as written: every key optional, nothing coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    controller: _Text | None = None
    app: _Text | None = None
    token_file: _Text | None = None
    ca_file: _Text | None = None
    ca_bundle: _Text | None = None
    data_path: _Text | None = None
    workdir: _Text | None = None
    tls_cert: _Text | None = None
    tls_key: _Text | None = None
    combiners: list[_Id] | None = Field(None, max_length=MAX_ACCEPTED_COMBINERS)
    allow_apps: list[_Digest] | None = Field(None, max_length=MAX_ALLOWED_APPS)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    log_format: Literal["text", "json"] | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: _Text | None = None
    settings: dict[str, AppSetting] = Field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SiteConfig:
    """A site file, read and checked; paths resolved against the file's folder."""

    controller: str | None = None
    app: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    ca_bundle: Path | None = None
    data_path: Path | None = None
    workdir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    combiners: tuple[str, ...] = ()
    """The combiners this site accepts (empty: any the controller assigns)."""
    allow_apps: tuple[str, ...] = ()
    """The SHA-256 of each app package this site runs when a session names it."""
    log_level: str | None = None
    log_format: str | None = None
    metrics_port: int | None = None
    """Serve ``GET /metrics`` on this port (0: a free one); None: not served."""
    metrics_host: str | None = None
    settings: dict[str, AppSettingValue] = field(default_factory=dict)


def load_site_config(path: Path) -> SiteConfig:
    """Read and check the site file at ``path``; `ConfigError` naming the key and the fix."""
    try:
        with path.open("rb") as file:
            text = file.read(MAX_SITE_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the site file {path}: {exc.strerror or exc}") from exc
    if len(text) > MAX_SITE_FILE_BYTES:
        raise ConfigError(f"the site file {path} is over 1 MiB; a site file is a few lines")
    try:
        raw = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not TOML: {exc}") from exc
    try:
        parsed = _SiteFile.model_validate(raw)
    except PydanticValidationError as exc:
        raise ConfigError(_one_line(path, exc, raw)) from exc
    check_app_settings(parsed.settings, f"{path} [settings]")
    folder = path.resolve().parent
    paths = {
        key: (folder / value if value is not None else None)
        for key in _PATH_KEYS
        for value in [getattr(parsed, key)]
    }
    return SiteConfig(
        controller=parsed.controller,
        app=parsed.app,
        combiners=tuple(parsed.combiners or ()),
        allow_apps=tuple(parsed.allow_apps or ()),
        log_level=parsed.log_level,
        log_format=parsed.log_format,
        metrics_port=parsed.metrics_port,
        metrics_host=parsed.metrics_host,
        settings=dict(parsed.settings),
        **paths,
    )


def _one_line(path: Path, exc: PydanticValidationError, raw: dict[str, object]) -> str:
    """The first problem: an unknown key with the keys there are, or a key's bad value
    with what to write instead."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = loc[0]
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(_SiteFile.model_fields))
        return (
            f"{path}: unknown key {key!r}; the keys are {known} (the app's own settings go "
            "in the [settings] table)"
        )
    if key == "settings" and len(loc) > 1:
        return (
            f"{path}: [settings] {loc[1]} = {first.get('input')!r} is not a string, integer, "
            "float or boolean; write one of those"
        )
    fix = _FIXES.get(key, 'a quoted path, e.g. token_file = "site.token"')
    value = raw.get(key)
    return f"{path}: {key} = {value!r} is not valid ({first['msg']}); write {fix}"
