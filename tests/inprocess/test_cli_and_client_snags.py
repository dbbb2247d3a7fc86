"""`strata` and `ControllerClient` without the snags of the walkthrough, against the real
REST app served on loopback: ids by prefix, --format on every list, "did you mean", the
running session named, the client configured as the CLI is, and errors that say what to
pass to a secured controller. The CLI runs in this process, through its error boundary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer

from stratafl import errors
from stratafl.cli.errors import run as run_cli
from stratafl.cli.listing import Format
from stratafl.cli.main import app
from stratafl.restapi import ControllerClient
from stratafl.security import Role
from stratafl.settings import SessionConfig
from tests.support.loopback import LoopbackAPI


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackAPI]:
    """One secured controller over HTTPS for the whole module: the default's shape."""
    server = LoopbackAPI(tmp_path_factory.mktemp("controller"), tls=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def trust_files(served: LoopbackAPI) -> tuple[Path, Path]:
    """The admin token file and the CA, as the controller's trust/ folder holds them."""
    trust = served.controller.trust
    assert trust is not None
    token, _ = trust.issue(served.controller.store, name="ops", subject="ops", role=Role.ADMIN)
    trust.admin_token_path.write_text(token)
    return trust.admin_token_path, trust.ca_path


@pytest.fixture
def shell(
    monkeypatch: pytest.MonkeyPatch, served: LoopbackAPI, trust_files: tuple[Path, Path], tmp_path
) -> Path:
    """An admin's shell: STRATA_* set, no config file, working in ``tmp_path``."""
    for name in ("STRATA_TOKEN", "STRATA_CONFIG", "STRATA_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    monkeypatch.setenv("STRATA_CONTROLLER", served.url)
    monkeypatch.setenv("STRATA_TOKEN_FILE", str(trust_files[0]))
    monkeypatch.setenv("STRATA_CA_FILE", str(trust_files[1]))
    monkeypatch.setenv("COLUMNS", "60")  # narrow: tables cut the ids
    monkeypatch.chdir(tmp_path)
    return tmp_path


def strata(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`strata ARGS` as `main` runs it: exit code, stdout, stderr."""
    capsys.readouterr()
    code = run_cli(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _list_commands(group: Any, path: str = "strata") -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group
            yield from _list_commands(command, f"{path} {name}")
        elif name == "list" and path != "strata experiment":  # studies, not records
            yield f"{path} {name}", command


def test_every_list_command_takes_format_table_or_json() -> None:
    lists = dict(_list_commands(typer.main.get_command(app)))
    assert {"strata token list", "strata audit list", "strata session list"} <= set(lists)
    for name, command in lists.items():
        option = next((p for p in command.params if "--format" in p.opts), None)
        assert option is not None, f"{name} takes no --format"
        assert option.type_descriptor.annotation is Format, name  # table or json


def test_tokens_models_and_sessions_by_prefix_with_whole_ids_in_json(shell, capsys, served):
    code, out, _ = strata(capsys, "token", "create", "--role", "viewer", "--name", "vera")
    assert code == 0 and out.startswith("st1.")
    code, out, _ = strata(capsys, "token", "list", "--format", "json")
    assert code == 0
    tokens = {t["name"]: t for t in json.loads(out)}
    vera = tokens["vera"]
    assert vera["role"] == "viewer" and len(vera["token_id"]) >= 16  # whole, never cut

    with ControllerClient.from_environment() as api:  # the same STRATA_* as the CLI
        seed = api.upload_model({"w": np.arange(3, dtype=np.float32)})
    code, out, _ = strata(capsys, "model", "download", seed.id[:8])
    assert code == 0 and (shell / f"{seed.id}.safetensors").is_file()

    code, _, err = strata(capsys, "session", "start", "--aggregator", "krumm")
    assert code == 2 and "did you mean 'krum'?" in err and err.count("\n") == 1

    settings = shell / "waiting.json"
    settings.write_text(json.dumps({"wait_for_clients_seconds": 3600}))  # no combiner
    code, out, _ = strata(
        capsys, "session", "start", "--seed-model", seed.id[:6], "--settings", str(settings),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, out
    (started,) = json.loads(out)
    assert started["seed_model_id"] == seed.id and started["config"]["seed_model_id"] == seed.id
    code, _, err = strata(capsys, "session", "start", "--settings", str(settings))
    assert code == 2 and f"session {started['id']} is already running" in err
    assert f"strata session stop {started['id']}" in err
    code, out, _ = strata(capsys, "session", "stop", started["id"][:5], "--cancel")
    assert code == 0 and f"session {started['id']}: cancelled" in out

    code, out, _ = strata(capsys, "token", "revoke", vera["token_id"][:12])
    assert code == 0 and f"revoked {vera['token_id']}" in out
    code, out, _ = strata(capsys, "audit", "list", "--format", "json")
    assert code == 0
    assert [(a["actor"], a["action"]) for a in json.loads(out)] == [
        ("ops", "token_issued"),
        ("ops", "model_uploaded"),
        ("ops", "session_started"),
        ("ops", "session_cancelled"),
        ("ops", "token_revoked"),
    ]
    code, out, _ = strata(capsys, "audit", "list")
    assert code == 0 and "┃ who" in out and "ops" in out  # a table


def test_a_viewer_token_is_refused_a_write_with_the_role_it_needs(
    shell, capsys, served, monkeypatch
):
    trust = served.controller.trust
    assert trust is not None
    token, _ = trust.issue(served.controller.store, name="v", subject="v", role=Role.VIEWER)
    monkeypatch.setenv("STRATA_TOKEN", token)
    monkeypatch.delenv("STRATA_TOKEN_FILE")
    assert strata(capsys, "session", "list", "--format", "json")[0] == 0
    code, _, err = strata(capsys, "session", "start")
    assert code == 2 and "a viewer token may not call POST /api/v1/sessions" in err
    assert "it needs an admin token" in err


def test_the_client_reads_the_clis_config_file_and_its_sessions_are_typed(
    served, trust_files, tmp_path
):
    token_file, ca_file = trust_files
    config = tmp_path / "config.toml"
    config.write_text(
        f'controller = "{served.url}"\ntoken_file = "{token_file}"\nca_file = "{ca_file}"\n'
    )
    with ControllerClient.from_environment(environ={"STRATA_CONFIG": str(config)}) as api:
        api.upload_model({"w": np.zeros(2, dtype=np.float32)})
        waiting = SessionConfig(rounds=2, wait_for_clients_seconds=3600)  # no combiner
        started = api.start_session(waiting)
        cancelled = api.cancel_session(started.id)
        listed = api.sessions()
    assert started.config == waiting and cancelled.config.rounds == 2  # typed, not a dict
    assert all(isinstance(s.config, SessionConfig) for s in listed)


def test_the_secure_default_tells_a_bare_client_what_to_pass(served, trust_files):
    """The old docs' ``ControllerClient("http://...")`` against a default controller."""
    plain = served.url.replace("https://", "http://")
    with (
        ControllerClient(plain) as api,
        pytest.raises(errors.ConfigError, match="speaks HTTPS; use https://") as raised,
    ):
        api.sessions()
    assert "verify=<its trust/ca.crt>" in str(raised.value)
    with ControllerClient(served.url) as api, pytest.raises(errors.ConfigError) as raised:
        api.sessions()
    assert "verify=<the controller's trust/ca.crt>" in str(raised.value)
    with (
        ControllerClient(served.url, verify=trust_files[1]) as api,
        pytest.raises(errors.AuthError) as refused,
    ):
        api.sessions()
    assert "token=" in str(refused.value) and "from_environment()" in str(refused.value)
