"""Where `strata` finds the controller and the credentials: flag > environment > config file,
with profiles, paths relative to the file, and one line for every mistake in the file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stratafl.cli.config import GlobalOptions, load_config, resolve_connection
from stratafl.errors import ConfigError

CONFIG = """
controller = "https://file:8080"
token_file = "trust/admin.token"
ca_file = "/etc/ca.crt"

[profiles.lab]
controller = "https://lab:8080"
token = "lab-token"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def test_a_flag_beats_the_environment_which_beats_the_file(config):
    options = GlobalOptions(config=config)
    env = {"STRATA_CONTROLLER": "https://env:8080"}
    assert resolve_connection(options=options, environ={}).controller == "https://file:8080"
    assert resolve_connection(options=options, environ=env).controller == "https://env:8080"
    flag = resolve_connection(controller="https://flag:1", options=options, environ=env)
    assert flag.controller == "https://flag:1"


def test_paths_in_the_file_are_relative_to_it(config):
    where = resolve_connection(options=GlobalOptions(config=config), environ={})
    assert where.token_file == config.parent / "trust" / "admin.token"
    assert where.ca_file == Path("/etc/ca.crt") and where.token is None


def test_the_token_and_the_token_file_are_one_setting(config):
    """A --token-file flag is not shadowed by a STRATA_TOKEN left in the shell."""
    options = GlobalOptions(config=config)
    env = {"STRATA_TOKEN": "from-env"}
    flagged = resolve_connection(token_file=Path("mine.token"), options=options, environ=env)
    assert (flagged.token, flagged.token_file) == (None, Path("mine.token"))
    from_env = resolve_connection(options=options, environ=env)
    assert (from_env.token, from_env.token_file) == ("from-env", None)


def test_a_profile_overrides_the_top_level(config):
    where = resolve_connection(options=GlobalOptions(config=config, profile="lab"), environ={})
    assert (where.controller, where.token, where.token_file) == (
        "https://lab:8080",
        "lab-token",
        None,
    )
    by_env = resolve_connection(environ={"STRATA_CONFIG": str(config), "STRATA_PROFILE": "lab"})
    assert by_env.controller == "https://lab:8080"
    with pytest.raises(ConfigError, match=r"no \[profiles.home\]; its profiles: lab"):
        resolve_connection(options=GlobalOptions(config=config, profile="home"), environ={})


def test_the_default_file_is_read_only_if_it_exists(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match="pass --controller URL, set STRATA_CONTROLLER"):
        resolve_connection(environ=env)
    (tmp_path / "stratafl").mkdir()
    (tmp_path / "stratafl" / "config.toml").write_text('controller = "http://x:1"\n')
    assert resolve_connection(environ=env).controller == "http://x:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("controler = 'http://x'\n", "unknown key 'controller'|unknown key 'controler'"),
        ("controller = 8080\n", "controller must be a non-empty string"),
        ("controller = \n", "is not valid TOML"),
    ],
)
def test_mistakes_in_the_file_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_named_file_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")


def test_the_cli_reads_the_config_file_and_its_profile(tmp_path, config):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    config.write_text(f'controller = "https://file:1"\n[profiles.dead]\ncontroller = "{dead}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    done = subprocess.run(
        [sys.executable, "-m", "stratafl.cli", "--config", str(config), "--profile", "dead"]
        + ["session", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env | {"HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"error: cannot reach the controller at {dead}: start it (strata controller start) "
        "or check --controller\n"
    )
