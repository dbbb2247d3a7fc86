"""A whole federation in containers, brought up with deploy/compose's compose.yaml and up.sh:
PostgreSQL, the controller, two combiners and four clients, each in a container of the
image scripts/image.sh builds, TLS and tokens as by default, on podman networks where the
hostnames are the service names. A session runs through the REST API; the controller's
container is killed in the middle of it (one client held back, so no round can start and
the kill lands mid-session on any machine) and started again on the same volumes; the
client comes back, and the session must finish with every round committed and the model
trail whole.

Skipped with one line where podman or podman-compose is missing, except where ``CI`` is
set: there it fails (scripts/setup.sh installs both with the dev extras).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from stratafl.data.fashion_mnist import SYSTEM_DIR
from stratafl.errors import StrataError
from stratafl.restapi import ControllerClient
from stratafl.settings import SessionConfig
from tests.support.containers import build_images, podman_env
from tests.support.marks import HEAVY
from tests.support.strata import invoke_strata

pytestmark = [pytest.mark.slow, pytest.mark.container, HEAVY]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
APP = "stratafl.apps.fashion_mnist:make_small_app"
ROUNDS = 5
CLIENTS = ("client-0", "client-1", "client-2", "client-3")
TIERS = ("postgres", "controller", "combiner-a", "combiner-b", *CLIENTS)
T = TypeVar("T")


def _podman_compose() -> str | None:
    """podman-compose on PATH, or beside this interpreter (the dev extras install it into
    the venv, whose bin/ is not on PATH when the suite runs as .venv/bin/python -m pytest)."""
    beside = Path(sys.executable).parent / "podman-compose"
    return shutil.which("podman-compose") or (str(beside) if beside.is_file() else None)


def _tools_missing() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed: run scripts/setup.sh dev (CI requires it)"
    if _podman_compose() is None:
        return "podman-compose is not installed: run scripts/setup.sh dev (CI requires it)"
    if not SYSTEM_DIR.is_dir():
        return f"{SYSTEM_DIR} is missing: apt-get install dataset-fashion-mnist"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Federation:
    """The compose project: its podman environment, its containers and its REST API."""

    project: str
    env: dict[str, str]
    url: str
    secrets: Path

    def podman(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def healthy(self, service: str) -> bool:
        """The image's own HEALTHCHECK, run now (podman runs it on a timer only with systemd)."""
        check = ["podman", "healthcheck", "run", self.container(service)]
        return subprocess.run(check, env=self.env, capture_output=True, timeout=60).returncode == 0

    def logs(self) -> str:
        return "\n".join(
            f"--- {service}\n"
            + subprocess.run(
                ["podman", "logs", "--tail", "15", self.container(service)],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stderr  # fmt: skip
            for service in TIERS
        )


def _until(what: str, probe: Callable[[], T | None], seconds: float, logs: Callable[[], str]) -> T:
    """``probe()``'s first answer that is not None, within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = probe()
        except StrataError:  # the controller is restarting: ask again
            value = None
        if value is not None:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what}\n{logs()}")


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """The images built (or reused), the federation up; everything removed afterwards
    (containers, networks, volumes), whatever happened."""
    missing = _tools_missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    env = podman_env()
    build_images(env)
    project = f"stratatest{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env |= {
        "COMPOSE_PROJECT_NAME": project,
        "STRATA_SECRETS": str(tmp_path / "secrets"),
        "STRATA_REST_PORT": str(port),
        "STRATA_APP": APP,
        "FASHION_MNIST_DIR": str(SYSTEM_DIR),
        "COMPOSE": str(_podman_compose()),
    }
    compose = [env["COMPOSE"], "--file", str(COMPOSE_FILE), "--project-name", project]
    try:
        up = [COMPOSE_FILE.parent / "up.sh"]
        subprocess.run(up, env=env, check=True, timeout=300, stdout=subprocess.DEVNULL)
        yield Federation(project, env, f"https://127.0.0.1:{port}", tmp_path / "secrets")
    finally:
        down = [*compose, "down", "--volumes", "--timeout", "2"]
        subprocess.run(down, env=env, capture_output=True, timeout=300)


@pytest.mark.timeout(1500)
def test_a_federation_in_containers_survives_its_controller_being_killed(
    federation: Federation, tmp_path: Path
) -> None:
    started = time.monotonic()
    admin_token = tmp_path / "admin.token"
    admin_token.write_text(
        federation.podman(
            "exec",
            federation.container("controller"),
            "cat",
            "/var/lib/stratafl/controller/trust/admin.token",
        )  # fmt: skip
    )
    ca = federation.secrets / "ca.crt"
    with ControllerClient(
        federation.url, token=admin_token.read_text().strip(), verify=str(ca), timeout=30
    ) as api:
        _run_a_session_through_a_controller_kill(federation, api, admin_token, ca, started)


def _run_a_session_through_a_controller_kill(
    federation: Federation, api: ControllerClient, admin_token: Path, ca: Path, started: float
) -> None:
    def connected_ids() -> dict[str, str]:
        return {c.id: c.combiner_id for c in api.clients() if c.status == "connected"}

    def connected() -> dict[str, str] | None:
        on = connected_ids()
        return on if len(on) == len(CLIENTS) else None

    spread = _until("four connected clients", connected, 180, federation.logs)
    assert sorted(spread.values()) == ["combiner-a", "combiner-a", "combiner-b", "combiner-b"]
    for service in TIERS:  # every container's HEALTHCHECK passes, the clients' included
        _until(f"{service} healthy", lambda s=service: federation.healthy(s) or None, 60,
               federation.logs)  # fmt: skip

    admin_env = {
        "STRATA_CONTROLLER": federation.url,
        "STRATA_TOKEN_FILE": str(admin_token),
        "STRATA_CA_FILE": str(ca),
    }
    code, said = invoke_strata(admin_env, "model", "seed", "--app", APP)
    assert code == 0, said
    seed_id = said.strip().splitlines()[-1]
    # The kill must land while the session runs, whatever the machine's speed: with one
    # client stopped, no round can start (every round needs all four), so the session is
    # certainly mid-way when the controller dies; the client comes back after the restart.
    held_back = federation.container(CLIENTS[-1])
    federation.podman("stop", held_back)
    _until("three connected clients", lambda: len(connected_ids()) == 3 or None, 120,
           federation.logs)  # fmt: skip
    session = api.start_session(
        SessionConfig(rounds=ROUNDS, min_clients=4, round_timeout=120, wait_for_clients_seconds=900)
    )
    assert api.session(session.id).status == "running"
    controller = federation.container("controller")
    federation.podman("kill", controller)
    federation.podman("start", controller)  # a no-op if its restart policy did it already
    _until("the controller healthy again", lambda: federation.healthy("controller") or None,
           120, federation.logs)  # fmt: skip
    assert not [r for r in api.rounds(session.id) if r.status == "finished"]
    federation.podman("start", held_back)

    def ended() -> str | None:
        status = api.session(session.id).status
        return None if status == "running" else status

    assert _until("the session's end", ended, 420, federation.logs) == "finished"
    done = api.session(session.id)
    rounds = api.rounds(session.id)
    finished = sorted(r.number for r in rounds if r.status == "finished")
    assert finished == list(range(1, ROUNDS + 1)), [(r.number, r.status) for r in rounds]
    for record in rounds:
        if record.status == "finished":
            assert len(record.outcomes) == len(CLIENTS), record.outcomes
    assert done.final_model_id is not None
    trail = api.trail(done.final_model_id)
    assert [m.round for m in trail] == [*range(ROUNDS, 0, -1), None]
    assert trail[-1].id == seed_id
    restarts = json.loads(federation.podman("inspect", controller))[0]["State"]["StartedAt"]
    print(
        f"\ncontainers: {ROUNDS} rounds, the controller killed before round 1 "
        f"(restarted {restarts}); {time.monotonic() - started:.1f} s from the first wait"
    )
