"""The controller, two combiners and the clients on four hosts, each in its own network
namespace on this machine (`tests/support/netns.py`), joined by a bridge: a federation where
nobody reaches anybody over loopback.

Each tier is started as an operator would start it on its own host, with the real CLI
(``strata controller start --host 0.0.0.0 --advertise-address IP``, ...), TLS and tokens
as by default: tokens are issued with ``strata token create`` and the seed uploaded with
``strata model seed``, both on the controller's host with its ``trust/admin.token`` and
``trust/ca.crt``. The admin's REST calls run on the controller's host too, against its
address on the bridge. Skipped with one line where namespaces cannot be made (not root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.marks import HEAVY
from tests.support.netns import Network, namespaces_unavailable
from tests.support.paths import TEST_APP
from tests.support.strata import STRATA

pytestmark = [pytest.mark.slow, HEAVY]

CLIENTS = 4
ROUNDS = 2
CONTROLLER_PORT = 8443  # every host is a fresh namespace: any port is free
COMBINER_PORT = 7443
COMBINERS = ("combiner-a", "combiner-b")

ADMIN_SCRIPT = """
import json, sys, time
from stratafl.restapi import ControllerClient
from stratafl.errors import UnavailableError
from stratafl.settings import SessionConfig

url, token_file, ca_file, what, seconds = sys.argv[1:6]
deadline = time.monotonic() + float(seconds)
api = ControllerClient(url, token=open(token_file).read().strip(), verify=ca_file, timeout=30)

def until(probe):
    while time.monotonic() < deadline:
        try:
            value = probe()
        except UnavailableError:
            value = None
        if value is not None:
            return value
        time.sleep(0.25)
    sys.exit(f"timed out after {seconds} s waiting for {what}")

def dump(records):
    return [r.model_dump(mode="json") for r in records]

def clients_spread():
    wanted, per_combiner = int(sys.argv[6]), int(sys.argv[7])
    on = [c.combiner_id for c in api.clients() if c.status == "connected"]
    spread = {c: on.count(c) for c in set(on)}
    if len(on) == wanted and all(n == per_combiner for n in spread.values()):
        return spread
    return None

def session():
    config = SessionConfig(rounds=int(sys.argv[6]), min_clients=int(sys.argv[7]),
                           round_timeout=60)
    started = api.start_session(config)
    done = until(lambda: (s := api.session(started.id)).status != "running" and s or None)
    return {
        "session": done.model_dump(mode="json"),
        "rounds": dump(api.rounds(done.id)),
        "trail": dump(api.trail(done.final_model_id)) if done.final_model_id else [],
    }

if what == "combiners":
    answer = until(lambda: (c := api.combiners()) and len(c) == int(sys.argv[6]) and dump(c)
                   or None)
elif what == "clients":
    answer = until(clients_spread)
elif what == "session":
    answer = session()
print(json.dumps(answer))
"""


@pytest.fixture
def network() -> Iterator[Network]:
    """Four hosts on a bridge; removed afterwards, whatever happened (or skip if not root)."""
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with Network(["controller", *COMBINERS, "clients"]) as net:
        yield net


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], seconds: float, log: Path) -> str:
    """The file's content once ``process`` wrote it (ready files are written when serving)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()):
            return text
        if process.poll() is not None:
            raise AssertionError(f"{path.stem} exited with {process.returncode}; see {log}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds:g} s waiting for {path}; see {log}")


@pytest.mark.timeout(280)
def test_a_federation_across_several_hosts_over_tls(network: Network, tmp_path: Path):
    controller, clients = network["controller"], network["clients"]
    strata = list(STRATA)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    logs = tmp_path / "logs"
    logs.mkdir()
    trust = tmp_path / "controller" / "trust"
    ca, admin = trust / "ca.crt", trust / "admin.token"
    url = f"https://{controller.address}:{CONTROLLER_PORT}"

    started = time.monotonic()
    process = network.popen(
        controller,
        [
            *strata, "controller", "start",
            "--host", "0.0.0.0", "--advertise-address", controller.address,
            "--port", str(CONTROLLER_PORT),
            "--workdir", str(tmp_path / "controller"),
            "--ready-file", str(tmp_path / "controller.ready"),
        ],
        log=logs / "controller.log",
        env=env,
    )  # fmt: skip
    ready = _wait_for_file(tmp_path / "controller.ready", process, 60, logs / "controller.log")
    assert json.loads(ready)["url"] == url  # the advertised address, never 0.0.0.0

    admin_env = dict(env, STRATA_CONTROLLER=url, STRATA_TOKEN_FILE=str(admin))
    admin_env["STRATA_CA_FILE"] = str(ca)

    def admin_call(what: str, seconds: float, *args: object) -> Any:
        """ADMIN_SCRIPT on the controller's host: its JSON answer."""
        argv = [sys.executable, "-c", ADMIN_SCRIPT, url, str(admin), str(ca), what, str(seconds)]
        out = network.run(controller, [*argv, *map(str, args)], timeout=seconds + 30, env=env)
        return json.loads(out)

    def token(role: str, name: str) -> Path:
        """`strata token create ... > name.token`, on the controller's host; a combiner's
        names the address its certificate may carry."""
        hosts = ["--host", network[name].address] if role == "combiner" else []
        made = network.run(
            controller,
            [*strata, "token", "create", "--role", role, "--name", name, *hosts],
            timeout=60,
            env=admin_env,
        )
        path = tmp_path / f"{name}.token"
        path.write_text(made)
        return path

    for name in COMBINERS:
        host = network[name]
        ready_file = tmp_path / f"{name}.ready"
        combiner = network.popen(
            host,
            [
                *strata, "combiner", "start", "--controller", url,
                "--host", "0.0.0.0", "--advertise-address", host.address,
                "--port", str(COMBINER_PORT),
                "--token-file", str(token("combiner", name)), "--ca-file", str(ca),
                "--max-clients", str(CLIENTS // 2),  # two clients each: both take part
                "--workdir", str(tmp_path / name),
                "--ready-file", str(ready_file),
            ],
            log=logs / f"{name}.log",
            env=env,
        )  # fmt: skip
        _wait_for_file(ready_file, combiner, 60, logs / f"{name}.log")
    for i in range(CLIENTS):
        network.popen(
            clients,
            [
                *strata, "client", "start", "--controller", url, "--app", TEST_APP,
                "--token-file", str(token("client", f"client-{i}")), "--ca-file", str(ca),
                "--partition-id", str(i), "--num-partitions", str(CLIENTS),
            ],
            log=logs / f"client-{i}.log",
            env=env,
        )  # fmt: skip
    spread = admin_call("clients", 90, CLIENTS, CLIENTS // 2)
    assert spread == {name: CLIENTS // 2 for name in COMBINERS}

    seed_id = network.run(
        controller, [*strata, "model", "seed", "--app", TEST_APP], timeout=120, env=admin_env
    ).strip()
    ran = admin_call("session", 150, ROUNDS, CLIENTS)
    combiners = admin_call("combiners", 30, len(COMBINERS))
    seconds = time.monotonic() - started

    session, rounds, trail = ran["session"], ran["rounds"], ran["trail"]
    assert session["status"] == "finished", session["reason"]
    assert [(r["number"], r["status"]) for r in rounds] == [(1, "finished"), (2, "finished")]
    for record in rounds:  # every client of both combiners trained in every round
        took_part = {(o["combiner_id"], o["status"]) for o in record["outcomes"]}
        assert took_part == {(name, "ok") for name in COMBINERS}, record["outcomes"]
        assert len(record["outcomes"]) == CLIENTS
    assert [m["round"] for m in trail] == [2, 1, None] and trail[-1]["id"] == seed_id
    assert all(c["status"] == "online" for c in combiners), combiners
    advertised = {c["id"]: c["address"] for c in combiners}
    assert advertised == {name: f"{network[name].address}:{COMBINER_PORT}" for name in COMBINERS}, (
        advertised
    )
    assert not any(address.startswith("0.0.0.0") for address in advertised.values())
    _report(network, seconds, rounds)


def _report(network: Network, seconds: float, rounds: list[dict[str, Any]]) -> None:
    hosts = ", ".join(f"{h.name} {h.address}" for h in network.hosts.values())
    print(f"\nseveral hosts on {network.cidr}: {hosts}")
    for record in rounds:
        combiners = sorted({o["combiner_id"] for o in record["outcomes"]})
        print(
            f"round {record['number']}: {record['status']}, {len(record['outcomes'])} clients "
            f"via {combiners}, {record['duration']:.2f} s"
        )
    print(f"from the controller's start to the session's end: {seconds:.1f} s")
