"""A controller started as a person starts one (`strata controller start`), for the tests
that run tiers by hand against it; one per test module where it can be shared."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from stratafl.errors import StrataError
from stratafl.restapi import ControllerClient
from tests.support.strata import start_strata

__all__ = ["RunningController", "exited", "running_controller", "until"]

T = TypeVar("T")


def until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """``predicate()``'s first truthy value, polled until ``timeout`` (a hang guard); a
    StrataError (the peer is not up yet) counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StrataError:
            value = None  # type: ignore[assignment]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def exited(process: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """The exit code of ``process``, which must end within ``timeout`` (a hang guard)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise AssertionError(
            f"still running after {timeout} s; its log:\n{log.read_text()[-3000:]}"
        ) from None


@dataclass(frozen=True)
class RunningController:
    url: str
    workdir: Path
    log: Path
    api: ControllerClient
    """An admin's REST client, trusting ``ca_bundle`` (or the federation's CA)."""

    @property
    def trust(self) -> Path:
        return self.workdir / "trust"

    @property
    def ca_file(self) -> Path:
        return self.trust / "ca.crt"

    @property
    def admin_token_file(self) -> Path:
        return self.trust / "admin.token"


@contextmanager
def running_controller(
    folder: Path, *args: str, verify: Path | None = None
) -> Iterator[RunningController]:
    """`strata controller start --port 0 ARGS` in ``folder/controller``, until the block
    ends; ``verify`` is the CA file its REST certificate is checked with (default: the
    federation's CA it makes)."""
    workdir, ready, log = (
        folder / "controller",
        folder / "controller.ready",
        folder / "controller.log",
    )
    process = start_strata(
        "controller",
        "start",
        "--port",
        "0",
        "--workdir",
        str(workdir),
        "--ready-file",
        str(ready),
        *args,
        log=log,
    )
    api = None
    try:
        until(
            lambda: (ready.exists() and ready.read_text()) or process.poll() is not None,
            60,
            "the controller",
        )
        assert process.poll() is None, log.read_text()
        url = json.loads(ready.read_text())["url"]
        token = (workdir / "trust" / "admin.token").read_text().strip()
        api = ControllerClient(url, token=token, verify=verify or workdir / "trust" / "ca.crt")
        until(lambda: api.health().status == "ok", 60, "the controller's health")
        yield RunningController(url, workdir, log, api)
    finally:
        if api is not None:
            api.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
