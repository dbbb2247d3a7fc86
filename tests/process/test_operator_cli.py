"""`strata session|model|combiner|client ...` against a real controller process: lists as
tables or JSON, a session started and shown, a model downloaded, errors as one line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from typer.testing import CliRunner

from stratafl.cli.main import app
from stratafl.controller.main import ControllerOptions
from stratafl.launch.processes import ProcessGroup
from stratafl.restapi import ControllerClient
from tests.support.strata import invoke_strata, run_strata

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running controller, and the STRATA_* variables an admin's shell would have."""
    group = ProcessGroup(tmp_path)
    options = ControllerOptions(
        workdir=tmp_path / "controller", http_port=0, ready_file=group.ready_file("controller")
    )
    try:
        info = json.loads(group.start("controller", options).wait_ready())
        yield {
            "STRATA_CONTROLLER": info["url"],
            "STRATA_TOKEN_FILE": info["admin_token_file"],
            "STRATA_CA_FILE": info["ca_file"],
        }
    finally:
        group.stop_all()


def test_sessions_models_and_tiers_from_the_command_line(env, tmp_path):
    api = ControllerClient(
        env["STRATA_CONTROLLER"],
        token=Path(env["STRATA_TOKEN_FILE"]).read_text(),
        verify=env["STRATA_CA_FILE"],
    )
    with api:
        seed = api.upload_model({"w": np.arange(4, dtype=np.float32)})

    code, out = invoke_strata(env, "model", "list", "--format", "json")
    assert code == 0 and [m["id"] for m in json.loads(out)] == [seed.id]

    # no client ever connects: the session's rounds fail, and say why
    settings = tmp_path / "session.json"
    settings.write_text(  # flag keys too: the flag given wins, the others keep the file's
        json.dumps(
            {"wait_for_clients_seconds": 0, "max_failed_rounds": 0, "rounds": 5, "min_clients": 2}
        )
    )
    code, out = invoke_strata(
        env, "session", "start", "--rounds", "2", "--settings", str(settings), "--format", "json"
    )
    assert code == 0, out
    (started,) = json.loads(out)
    assert started["seed_model_id"] == seed.id and started["config"]["rounds"] == 2
    assert started["config"]["min_clients"] == 2 and started["config"]["aggregator"] == "fedavg"
    for _ in range(200):
        code, out = invoke_strata(env, "session", "show", started["id"], "--format", "json")
        if json.loads(out)["session"]["status"] != "running":
            break
        time.sleep(0.05)
    shown = json.loads(out)
    assert shown["session"]["status"] == "failed" and shown["session"]["reason"]
    assert [r["status"] for r in shown["rounds"]] == ["failed"]

    code, out = invoke_strata(env, "session", "list")
    assert code == 0 and started["id"] in out and "failed" in out  # a table

    stopped = run_strata("session", "stop", started["id"], env=env, timeout=60)  # via `main`
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 2 and "is not running" in said and "Traceback" not in said

    target = tmp_path / "seed.safetensors"
    code, out = invoke_strata(env, "model", "download", seed.id, "--to", str(target))
    assert code == 0
    np.testing.assert_array_equal(safetensors.numpy.load_file(str(target))["w"], np.arange(4))

    assert invoke_strata(env, "combiner", "list", "--format", "json") == (0, "[]\n")
    code, out = invoke_strata(env, "client", "list")
    assert code == 0 and "combiner" in out  # the table's header, no rows


def test_the_version_is_printed() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("stratafl ")
