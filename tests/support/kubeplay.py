"""Run the Kubernetes manifests of deploy/k8s under `podman kube play`, as far as it goes.

`podman kube play` starts the Deployments, PersistentVolumeClaims, ConfigMaps and Secrets
of a rendered overlay, but it is no cluster: it ignores Services and NetworkPolicies (and,
in podman 4.3, StatefulSets). What stands in for each gap, here and nowhere else:

- **Services**: every pod is given a fixed address on a podman network of its own, and
  every pod's ``/etc/hosts`` maps the names the manifests dial (the Service names and the
  organisations' public names) to those addresses (``hostAliases``), as a cluster's DNS and
  load balancers would.
- **Secrets in podman older than 4.4**: its kube play mounts a Secret's base64 text
  instead of its bytes and cannot read one into an environment variable, so there the same
  data reaches the pods as a ConfigMap (`secrets_as_config_maps`).
- **Container ports in podman older than 4.8**: it publishes each ``containerPort`` on the
  host's port of the same number, as if it were a ``hostPort`` (5432 clashes with the
  machine's own PostgreSQL); only Services use those lists, so there they are dropped
  (`without_container_ports`).

Names are the manifests' own (``strata-controller-pod-0``, volume ``strata-controller-state``,
...): `KubePlay` removes what a previous run left of them before it starts, and everything
it started afterwards.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.containers import podman_env

Doc = dict[str, Any]


def tools_missing() -> str | None:
    """Why the manifests cannot be played here (one line), or None."""
    for tool, package in (("podman", "podman runc"), ("kubectl", "kubernetes-client")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}): kube play not tested"
    return None


def require_tools() -> None:
    """Skip without podman or kubectl, except where ``CI`` is set: there it fails."""
    reason = tools_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def render(overlay: Path) -> list[Doc]:
    """``kubectl kustomize overlay``: the objects it renders, in its order."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def generic_secret(name: str, files: Mapping[str, str | bytes]) -> Doc:
    """The Secret ``kubectl create secret generic NAME --from-file=KEY=FILE...`` makes,
    as the deployment guide tells operators to."""
    data = {
        key: base64.b64encode(value.encode() if isinstance(value, str) else value).decode()
        for key, value in files.items()
    }
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}


def workloads(docs: Iterable[Doc]) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in ("Deployment", "Pod")]


def names_of(docs: Iterable[Doc], kind: str) -> list[str]:
    return [doc["metadata"]["name"] for doc in docs if doc["kind"] == kind]


def volumes_of(docs: list[Doc]) -> list[str]:
    """The podman volumes playing ``docs`` makes: one per claim, and one per ConfigMap or
    Secret a pod mounts (podman keeps those after `kube down` too)."""
    return [
        *names_of(docs, "PersistentVolumeClaim"),
        *names_of(docs, "ConfigMap"),
        *names_of(docs, "Secret"),
    ]


def pod_spec(doc: Doc) -> Doc:
    spec: Doc = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def with_host_aliases(docs: list[Doc], hosts: Mapping[str, str]) -> list[Doc]:
    """``docs`` whose pods resolve each name of ``hosts`` to its address (Services' stand-in)."""
    by_address: dict[str, list[str]] = {}
    for name, address in hosts.items():
        by_address.setdefault(address, []).append(name)
    aliases = [{"ip": ip, "hostnames": names} for ip, names in by_address.items()]
    out = copy.deepcopy(docs)
    for doc in workloads(out):
        pod_spec(doc)["hostAliases"] = aliases
    return out


def secrets_as_config_maps(docs: list[Doc]) -> list[Doc]:
    """``docs`` with every Secret a ConfigMap of the same (decoded) data, and every reference
    to one a reference to the ConfigMap: podman 4.3's kube play mangles Secrets."""
    out = []
    for doc in copy.deepcopy(docs):
        if doc["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in doc.get("data", {}).items()}
            doc = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": doc["metadata"],
                "data": data,
            }
        elif doc["kind"] in ("Deployment", "Pod"):
            spec = pod_spec(doc)
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    source = volume.pop("secret")
                    volume["configMap"] = {"name": source["secretName"]}
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).pop("secretKeyRef", None)
                    if ref is not None:
                        env["valueFrom"]["configMapKeyRef"] = ref
        out.append(doc)
    return out


def without_container_ports(docs: list[Doc]) -> list[Doc]:
    """``docs`` whose containers declare no ports (podman < 4.8 would publish them)."""
    out = copy.deepcopy(docs)
    for doc in workloads(out):
        for container in pod_spec(doc)["containers"]:
            container.pop("ports", None)
    return out


def podman_version() -> tuple[int, int]:
    text = subprocess.run(
        ["podman", "version", "--format", "{{.Client.Version}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = re.match(r"(\d+)\.(\d+)", text.strip())
    assert found is not None, text
    return int(found.group(1)), int(found.group(2))


class KubePlay:
    """A podman network, and the overlays played onto it at fixed addresses."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = podman_env()  # runc and explicit ulimits, as scripts/image.sh sets them
        self.network = f"strata-kube-{secrets.token_hex(3)}"
        self.subnet = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250)}"
        self._next_host = 10
        self._played: list[Path] = []
        self._volumes: list[str] = []
        self._secrets: list[str] = []
        self.version = podman_version()

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check:
            assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def addresses(self, docs: list[Doc]) -> dict[str, str]:
        """A fixed address on the network for each workload of ``docs``, by its name."""
        given = {}
        for doc in workloads(docs):
            given[doc["metadata"]["name"]] = f"{self.subnet}.{self._next_host}"
            self._next_host += 1
        return given

    def play(self, name: str, docs: list[Doc], addresses: Mapping[str, str]) -> None:
        """`podman kube play` ``docs`` (written to NAME.yaml), each workload at its address."""
        if self.version < (4, 4):
            docs = secrets_as_config_maps(docs)
        if self.version < (4, 8):
            docs = without_container_ports(docs)
        self._forget_leftovers(docs)
        path = self.folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        ips = [f"--ip={addresses[doc['metadata']['name']]}" for doc in workloads(docs)]
        self._played.append(path)
        self._volumes += volumes_of(docs)
        self._secrets += names_of(docs, "Secret")
        self.podman("kube", "play", f"--network={self.network}", *ips, str(path), timeout=300)

    def container(self, workload: str, container: str) -> str:
        """The name podman gives a Deployment's container (its first pod's)."""
        return f"{workload}-pod-0-{container}"

    def exec(self, container: str, *argv: str, timeout: float = 120) -> str:
        return self.podman("exec", container, *argv, timeout=timeout)

    def logs(self, container: str) -> str:
        done = subprocess.run(
            ["podman", "logs", "--tail", "40", container],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
        )
        return done.stdout + done.stderr

    def wait_healthy(self, container: str, seconds: float) -> None:
        """Until the container's liveness probe passes (`podman healthcheck run`: the
        probe podman took from the manifest); fails at once if the container stopped."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.podman("inspect", "--format", "{{.State.Status}}", container).strip()
            if state != "running":
                raise AssertionError(f"{container} is {state}:\n{self.logs(container)}")
            done = subprocess.run(
                ["podman", "healthcheck", "run", container],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env,
            )
            if done.returncode == 0:
                return
            time.sleep(1)
        raise AssertionError(
            f"{container} not healthy after {seconds:g} s:\n{self.logs(container)}"
        )

    def _forget_leftovers(self, docs: list[Doc]) -> None:
        """Remove the pods and volumes of these names that a killed run left behind."""
        for doc in workloads(docs):
            pod = f"{doc['metadata']['name']}-pod-0"
            self.podman("pod", "rm", "--force", "--ignore", pod, check=False)
        for volume in volumes_of(docs):
            self.podman("volume", "rm", "--force", volume, check=False)

    def __enter__(self) -> KubePlay:
        self.podman("network", "create", f"--subnet={self.subnet}.0/24", self.network)
        return self

    def __exit__(self, *exc: object) -> None:
        for path in reversed(self._played):
            self.podman("kube", "down", str(path), timeout=300, check=False)
        for volume in self._volumes:
            self.podman("volume", "rm", "--force", volume, check=False)
        for secret in self._secrets:
            self.podman("secret", "rm", secret, check=False)
        self.podman("network", "rm", "--force", self.network, check=False)
