"""Two organisations' overlays of deploy/k8s, rendered by `kubectl kustomize` and run under
`podman kube play`: a real federation of pods, secured as by default (TLS, a token each).

Organisation A plays its controller and PostgreSQL; its admin issues tokens with `strata
token create` inside the controller's pod, as an admin job in the cluster would; the tokens
and the public CA become organisation B's Secrets, and B plays its combiner and two
clients, which join A's controller at its public name. A session of two rounds must finish
with both clients in every round. What kube play cannot show (Services, NetworkPolicies)
and what stands in for it: tests/support/kubeplay.py and docs/deployment.md, "Kubernetes".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import build_images
from tests.support.kubeplay import (
    KubePlay,
    generic_secret,
    render,
    require_tools,
    with_host_aliases,
)
from tests.support.marks import HEAVY
from tests.support.paths import REPOSITORY

pytestmark = [pytest.mark.slow, pytest.mark.container, HEAVY]

OVERLAYS = REPOSITORY / "deploy" / "k8s" / "overlays"
CONTROLLER = "strata-controller"
ADMIN = [
    "--controller=https://strata-controller:8443",  # the in-cluster name (a --tls-host)
    "--token-file=/var/lib/stratafl/controller/trust/admin.token",
    "--ca-file=/var/lib/stratafl/controller/trust/ca.crt",
]
APP = "stratafl.apps.noise:make_app"
ROUNDS = 2
SITES = ("site-1", "site-2")


def _public_names(docs: list[dict[str, Any]], container: str, flag: str) -> list[str]:
    """The values of ``--flag=`` in a container's args (the names the overlay gives it)."""
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                return [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith(flag + "=")]
    raise AssertionError(f"no container {container} in the overlay")


def _config_value(docs: list[dict[str, Any]], key: str) -> str:
    for doc in docs:
        if doc["kind"] == "ConfigMap" and key in doc.get("data", {}):
            return str(doc["data"][key])
    raise AssertionError(f"no ConfigMap gives {key}")


@pytest.mark.timeout(900)
def test_two_organisations_run_a_federation_of_pods(tmp_path: Path):
    require_tools()
    org_a = render(OVERLAYS / "org-a-controller")
    org_b = render(OVERLAYS / "org-b-sites")
    # B's configured URL names A's controller by the public name A's overlay advertises.
    controller_name = _public_names(org_a, "controller", "--advertise-address")[0]
    assert _config_value(org_b, "STRATA_CONTROLLER") == f"https://{controller_name}:8443"
    combiner_name = _public_names(org_b, "combiner", "--advertise-address")[0]

    with KubePlay(tmp_path) as play:
        build_images(play.env)
        at = {**play.addresses(org_a), **play.addresses(org_b)}
        hosts = {
            "strata-postgres": at["strata-postgres"],
            CONTROLLER: at[CONTROLLER],
            controller_name: at[CONTROLLER],
            "strata-combiner": at["strata-combiner"],
            combiner_name: at["strata-combiner"],
        }
        password = generic_secret("strata-postgres", {"password": "kube-play-only"})
        play.play("org-a", with_host_aliases([password, *org_a], hosts), at)
        controller = play.container(CONTROLLER, "controller")
        play.wait_healthy(play.container("strata-postgres", "postgres"), 120)
        play.wait_healthy(controller, 180)

        def admin(*argv: str) -> str:
            return play.exec(controller, "strata", *argv, *ADMIN)

        ca = play.exec(controller, "cat", "/var/lib/stratafl/controller/trust/ca.crt")
        credentials = [
            generic_secret(
                "strata-combiner-credentials",
                {
                    "token": admin(
                        "token",
                        "create",
                        "--role=combiner",
                        "--name=org-b-combiner",
                        f"--host={combiner_name}",
                    ),  # fmt: skip
                    "ca.crt": ca,
                },
            )
        ]
        for site in SITES:
            token = admin("token", "create", "--role=client", f"--name={site}")
            credentials.append(
                generic_secret(
                    f"strata-client-{site[-1]}-credentials", {"token": token, "ca.crt": ca}
                )
            )
        play.play("org-b", with_host_aliases([*credentials, *org_b], hosts), at)
        play.wait_healthy(play.container("strata-combiner", "combiner"), 180)
        for site in SITES:
            play.wait_healthy(play.container(f"strata-client-{site[-1]}", "client"), 180)

        admin("model", "seed", f"--app={APP}")
        started = json.loads(
            admin("session", "start", f"--rounds={ROUNDS}", "--min-clients=2", "--format=json")
        )
        ran = _wait_until_ended(admin, started[0]["id"], seconds=300)
        combiners = json.loads(admin("combiner", "list", "--format=json"))

    assert ran["session"]["status"] == "finished", ran["session"]
    assert len(ran["rounds"]) == ROUNDS
    for done in ran["rounds"]:
        assert sorted(done["participants"]) == sorted(SITES), done
    assert [(c["id"], c["address"]) for c in combiners] == [
        ("org-b-combiner", f"{combiner_name}:50061")
    ]


def _wait_until_ended(admin: Any, session_id: str, seconds: float) -> dict[str, Any]:
    """`strata session show ID` once the session is no longer running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shown: dict[str, Any] = json.loads(admin("session", "show", session_id, "--format=json"))
        if shown["session"]["status"] != "running":
            return shown
        time.sleep(2)
    raise AssertionError(f"session {session_id} still running after {seconds:g} s")
