"""`strata` as the tests run it: in this process through typer's runner (fast, and the
test sees what a user would read), or as a child process, as a person runs it from a shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from typer.testing import CliRunner

from stratafl.cli.main import app

STRATA = (sys.executable, "-m", "stratafl.cli")
"""The `strata` command line, without depending on the installed script being on PATH."""


def invoke_strata(env: Mapping[str, str], *args: str) -> tuple[int, str]:
    """`strata ARGS` in this process with the environment ``env``: its exit code and output."""
    result = CliRunner().invoke(app, list(args), env=dict(env))
    return result.exit_code, result.output


def run_strata(
    *args: str, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`strata ARGS` as a child process in this environment (plus ``env``), its output
    captured; a run over ``timeout`` seconds raises."""
    return subprocess.run(
        [*STRATA, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ) | dict(env or {}),
    )


def strata_succeeds(*args: str, timeout: float) -> None:
    """`run_strata`, which must exit with 0; its output is the failure's message."""
    done = run_strata(*args, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr


def strata_in_clean_shell(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`strata ARGS` in a clean shell: no STRATA_* variables, a HOME without a config file
    (``cwd``), 80 columns; ``env`` is added on top."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    clean |= {"HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd / ".config"), "COLUMNS": "80"}
    return subprocess.run(
        [*STRATA, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean | dict(env or {}),
    )


def start_strata(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """`strata ARGS` started in the background, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*STRATA, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
