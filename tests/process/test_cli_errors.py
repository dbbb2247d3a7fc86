"""Every common mistake ends in one line on stderr that names the fix, exit code 2, and no
traceback (``strata --debug`` shows one). Each case runs the real `strata` command as a new
user would; the ones that start a federation are `slow`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import typer
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from stratafl.cli.admin import unreachable
from stratafl.cli.errors import INTERRUPTED, USAGE, one_line, run
from stratafl.cli.main import app
from stratafl.errors import ConfigError, UnavailableError
from tests.support.paths import CRASHING_APP, TEST_APP, TORCH_EXAMPLE
from tests.support.strata import strata_in_clean_shell


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a mistake prints, after checking it is all that went to stderr."""
    assert done.returncode == USAGE, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_misspelt_aggregator_gets_a_suggestion(tmp_path):
    line = _one_error_line(strata_in_clean_shell("run", "--aggregator", "krumm", cwd=tmp_path))
    assert "unknown aggregator 'krumm'; did you mean 'krum'? (see docs/aggregators.md)" in line
    assert list(tmp_path.glob("strata-run-*")) == []  # nothing started, nothing written


def test_zero_rounds_names_the_flag_and_the_range(tmp_path):
    line = _one_error_line(strata_in_clean_shell("run", "--rounds", "0", cwd=tmp_path))
    assert line == "error: --rounds 0 is out of range: use a value >= 1 and <= 100000"


def test_a_bad_partition_is_refused_before_anything_starts(tmp_path):
    line = _one_error_line(
        strata_in_clean_shell("run", "--partition", "dirichlet:abc", cwd=tmp_path)
    )
    assert "--partition" in line and "'dirichlet:abc'" in line and "dirichlet:0.5" in line
    assert list(tmp_path.glob("strata-run-*")) == []


def test_a_rule_that_needs_more_clients_per_combiner_says_how_many(tmp_path):
    line = _one_error_line(
        strata_in_clean_shell(
            "run", "--aggregator", "krum", "--clients", "6", "--combiners", "2", cwd=tmp_path
        )
    )
    assert "needs 5 clients at each combiner" in line and "--clients to 10" in line


def test_min_clients_below_the_rules_need_is_refused(tmp_path):
    line = _one_error_line(
        strata_in_clean_shell("run", "--aggregator", "bulyan", "--min-clients", "2", cwd=tmp_path)
    )
    assert "needs at least 7 updates" in line and "min_clients" in line


@pytest.mark.parametrize("command", [["model", "seed"], ["seed"]])  # `seed`: the old name
def test_seeding_with_the_controller_down_says_to_start_it(tmp_path, command):
    url = f"http://127.0.0.1:{_dead_port()}"
    done = strata_in_clean_shell(*command, "--app", TEST_APP, "--controller", url, cwd=tmp_path)
    assert _one_error_line(done) == (
        f"error: cannot reach the controller at {url}: start it (strata controller start) "
        "or check --controller"
    )


def test_no_controller_anywhere_names_the_three_ways(tmp_path):
    line = _one_error_line(strata_in_clean_shell("model", "list", cwd=tmp_path))
    assert "--controller" in line and "STRATA_CONTROLLER" in line and "config.toml" in line


def test_a_port_in_use_is_named_with_the_flag_to_change(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for flag in ("--port", "--grpc-port"):
            other = "--grpc-port" if flag == "--port" else "--port"
            done = strata_in_clean_shell(
                "controller", "start", flag, str(port), other, "0",
                "--workdir", str(tmp_path / "controller"), cwd=tmp_path,
            )  # fmt: skip
            line = _one_error_line(done)
            assert f"port {port} on 127.0.0.1 is already in use" in line and line.endswith(flag)


def test_a_missing_extra_is_named_with_its_brackets(tmp_path):
    shim = tmp_path / "no-torch" / "torch"  # as if torch were not installed
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    (tmp_path / "torch_app.py").write_text("import torch\n\ndef make_app(context): ...\n")
    env = {"PYTHONPATH": str(tmp_path / "no-torch")}
    for spec in (TORCH_EXAMPLE, "torch_app.py:make_app"):
        line = _one_error_line(strata_in_clean_shell("run", "--app", spec, cwd=tmp_path, env=env))
        assert "pip install 'stratafl[torch]'" in line


def test_debug_shows_the_traceback(tmp_path):
    done = strata_in_clean_shell("--debug", "run", "--aggregator", "krumm", cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr
    assert "did you mean 'krum'" in done.stderr


def test_ctrl_c_is_one_line_and_130(capsys):
    interrupted = typer.Typer()

    @interrupted.command()
    def wait() -> None:
        raise KeyboardInterrupt

    assert run(interrupted, []) == INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"


def _from(cause: Exception) -> UnavailableError:
    try:
        raise UnavailableError("cannot reach the controller") from cause
    except UnavailableError as exc:
        return exc


def test_an_unreachable_controller_is_told_apart_from_a_wrong_ca():
    url = "https://127.0.0.1:8080"
    refused = unreachable(url, _from(httpx.ConnectError("[Errno 111] Connection refused")))
    assert "start it (strata controller start) or check --controller" in str(refused)
    bad_ca = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "--ca-file" in str(unreachable(url, _from(bad_ca)))
    proxy = UnavailableError("GET /health failed with HTTP 503")  # not about the connection
    assert unreachable(url, proxy) is proxy


class _Settings(BaseModel):
    rounds: int = Field(3, ge=1, le=10)


def test_other_errors_become_one_line_that_points_at_debug():
    with pytest.raises(PydanticValidationError) as caught:
        _Settings(rounds=0)
    assert one_line(caught.value) == "rounds=0: Input should be greater than or equal to 1"
    assert one_line(ConfigError("a\nb")) == "a b"
    line = one_line(RuntimeError("boom"))
    assert line.startswith("RuntimeError: boom") and "--debug" in line
    in_use = OSError(98, "Address already in use")
    assert "--port" in one_line(in_use)


def test_every_command_and_option_has_help():
    missing: list[str] = []

    def walk(command, path: str) -> None:
        if getattr(command, "hidden", False):
            return
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if param.name != "help" and not getattr(param, "hidden", False):
                if not getattr(param, "help", None):
                    missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "strata")
    assert missing == []


def test_no_command_requires_the_controller_flag():
    """It may come from the environment or the config file (a bare `controller: ControllerUrl`
    without `= None` would make typer require it)."""
    required: list[str] = []

    def walk(command, path: str) -> None:
        required.extend(
            path for param in command.params if param.name == "controller" and param.required
        )
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "strata")
    assert required == []


def test_one_name_for_the_partition_everywhere(tmp_path):
    for command in (["run"], ["demo"], ["client", "start"]):
        shown = strata_in_clean_shell(*command, "--help", cwd=tmp_path).stdout
        assert "--partition " in shown and "--partitioner" not in shown
    for old_or_new in ("--partitioner", "--partition"):  # the old name still works, hidden
        done = strata_in_clean_shell(
            "client", "start", "--app", TEST_APP, "--controller", "http://127.0.0.1:1",
            "--insecure", old_or_new, "dirichlet:abc", cwd=tmp_path,
        )  # fmt: skip
        assert "'dirichlet:abc' is not valid" in _one_error_line(done)


@pytest.mark.slow
def test_the_rules_minimum_is_the_default_min_clients(tmp_path):
    done = strata_in_clean_shell(
        "run", "--app", TEST_APP, "--aggregator", "krum", "--clients", "5", "--combiners", "1",
        "--rounds", "1", "--no-baselines", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (workdir,) = tmp_path.glob("strata-run-*")
    report = json.loads((workdir / "report.json").read_text())
    assert report["session"]["min_clients"] == 5
    assert (workdir / "final_model.safetensors").is_file()
    said = " ".join(done.stdout.split())
    assert f"final model: {workdir / 'final_model.safetensors'}" in said
    assert f"report: {workdir / 'report.json'}" in said


@pytest.mark.slow
def test_a_client_that_crashes_names_a_log_that_exists(tmp_path):
    done = strata_in_clean_shell(
        "run", "--app", CRASHING_APP, "--clients", "2", "--combiners", "1", "--rounds", "1",
        "--no-baselines", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    line = _one_error_line(done)
    log = Path(re.search(r"see (\S+\.log)", line).group(1))
    assert log.is_file() and log.parent.parent.name.startswith("strata-run-")
    assert "crashed in train on purpose" in line and "crashed in train" in log.read_text()
