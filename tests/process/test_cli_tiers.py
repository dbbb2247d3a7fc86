"""The README's manual path: each tier started with its own `strata ... start` command,
secured as by default (TLS, tokens issued with `strata token create`), a seed model uploaded
with `strata model seed`, a session started over REST (as with curl), followed with the Python
REST client."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from stratafl.errors import UnavailableError
from stratafl.restapi import ControllerClient
from tests.support.paths import TEST_APP
from tests.support.strata import STRATA, start_strata

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except UnavailableError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _token(role: str, name: str, env: dict[str, str], folder: Path) -> Path:
    """`strata token create ... --out name.token`, as the README shows (a combiner's token
    names the host its certificate may carry)."""
    path = folder / f"{name}.token"
    hosts = ["--host", "127.0.0.1"] if role == "combiner" else []
    subprocess.run(
        [*STRATA, "token", "create", "--role", role, "--name", name, *hosts, "--out", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    return path


def test_each_tier_started_by_hand_runs_a_session(tmp_path):
    port = _free_port()
    url = f"https://127.0.0.1:{port}"
    log = tmp_path / "tiers.log"
    trust = tmp_path / "controller" / "trust"
    ca = trust / "ca.crt"
    processes = [
        start_strata(
            "controller",
            "start",
            "--port",
            str(port),
            "--workdir",
            str(tmp_path / "controller"),
            log=log,
        )
    ]
    api = None
    try:
        _until(lambda: (trust / "admin.token").exists(), 60, "the controller's trust folder")
        env = dict(
            os.environ,
            STRATA_CONTROLLER=url,
            STRATA_TOKEN_FILE=str(trust / "admin.token"),
            STRATA_CA_FILE=str(ca),
        )
        api = ControllerClient(url, token=(trust / "admin.token").read_text(), verify=ca)
        _until(lambda: api.health().status == "ok", 60, "the controller")
        tokens = {
            name: _token(role, name, env, tmp_path)
            for role, name in [("combiner", "edge-1"), ("combiner", "edge-2")]
            + [("client", f"hand-{i}") for i in range(3)]
        }
        processes.append(
            start_strata(
                "combiner",
                "start",
                "--controller",
                url,
                "--token-file",
                str(tokens["edge-1"]),
                "--ca-file",
                str(ca),
                "--max-clients",
                "1",
                "--workdir",
                str(tmp_path / "c1"),
                log=log,
            )
        )
        processes.append(
            start_strata(
                "combiner",
                "start",
                "--controller",
                url,
                "--token-file",
                str(tokens["edge-2"]),
                "--ca-file",
                str(ca),
                "--workdir",
                str(tmp_path / "c2"),
                log=log,
            )
        )
        _until(lambda: len(api.combiners()) == 2, 60, "combiners")
        for i in range(3):
            processes.append(
                start_strata(
                    "client",
                    "start",
                    "--controller",
                    url,
                    "--app",
                    TEST_APP,
                    "--token-file",
                    str(tokens[f"hand-{i}"]),
                    "--ca-file",
                    str(ca),
                    "--partition-id",
                    str(i),
                    "--num-partitions",
                    "3",
                    log=log,
                )
            )
        _until(
            lambda: sum(c.status == "connected" for c in api.clients()) == 3,
            60,
            "3 connected clients",
        )
        seeded = subprocess.run(
            [*STRATA, "model", "seed", "--app", TEST_APP],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env=env,
        )
        seed_id = seeded.stdout.strip()
        assert api.model(seed_id).id == seed_id

        body = {"rounds": 2, "min_clients": 3}
        admin = {"Authorization": f"Bearer {(trust / 'admin.token').read_text()}"}
        tls = ssl.create_default_context(cafile=ca)
        anonymous = httpx.post(f"{url}/api/v1/sessions", json=body, verify=tls)
        assert anonymous.status_code == 401
        session = httpx.post(f"{url}/api/v1/sessions", json=body, headers=admin, verify=tls)
        session = session.json()
        done = _until(
            lambda: (s := api.session(session["id"])).status != "running" and s,
            120,
            "the session",
        )
        assert done.status == "finished", done.reason
        on = [c.combiner_id for c in api.clients() if c.status == "connected"]
        assert sorted(on) == ["edge-1", "edge-2", "edge-2"]  # edge-1 holds --max-clients 1
        assert done.final_model_id is not None
        trail = api.trail(done.final_model_id)
        assert [m.id for m in trail][-1] == seed_id and len(trail) == 3
        events = [e.kind for e in api.events()]
        assert events.count("combiner_registered") == 2 and "session_finished" in events
        print(done.model_dump_json())
    finally:
        if api is not None:
            api.close()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
