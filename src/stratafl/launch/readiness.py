"""Is a tier ready? Read its ready file and probe what it names: `strata health`.

Each tier writes a ready file once it serves (`--ready-file`, or ``STRATA_READY_FILE`` in
the container image) and removes a stale one when it starts (`clear_ready_file`), so the
file always speaks of the running process:

    controller  {"url", "grpc_address", "ca_file", ...}  GET <url>/api/v1/health answers 200,
                                                          verified with ca_file
    combiner    {"grpc_address", "metrics_url"}           its gRPC port takes a connection
    client      {"combiner_id", "combiner_address"}       the file exists: the client had a
                                                          task stream open (it serves nothing)

The probes dial the address the tier advertises, the one its peers dial, so a container
whose own name does not resolve reports unhealthy, as its peers would find it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx

from stratafl.errors import UnavailableError

__all__ = ["PROBE_TIMEOUT_SECONDS", "check_ready", "clear_ready_file"]

PROBE_TIMEOUT_SECONDS = 5.0
"""Each probe's limit: a health check must answer before its runner's own timeout."""


def clear_ready_file(path: Path | None) -> None:
    """Remove a ready file a previous run left (a restarted container keeps its files), so
    nobody takes a tier that has not served yet for ready."""
    if path is not None:
        path.unlink(missing_ok=True)


def check_ready(path: Path) -> str:
    """One line saying what is ready; raises `UnavailableError` saying what is not."""
    ready = _read(path)
    if "url" in ready:
        return _probe_controller(str(ready["url"]), ready.get("ca_file"))
    if "grpc_address" in ready:
        return _probe_port("combiner", str(ready["grpc_address"]))
    if "combiner_id" in ready:
        return f"client ready: its task stream to {ready['combiner_id']} was opened"
    raise UnavailableError(f"{path} names no tier (no url, grpc_address or combiner_id)")


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UnavailableError(
            f"not ready: {path} does not exist yet (a tier writes it once it serves)"
        ) from None
    try:
        ready = json.loads(text)
    except json.JSONDecodeError:
        raise UnavailableError(f"not ready: {path} is being written") from None
    if not isinstance(ready, dict):
        raise UnavailableError(f"{path} is not a tier's ready file (a JSON object)")
    return ready


def _probe_controller(url: str, ca_file: object) -> str:
    verify: str | bool = str(ca_file) if ca_file else True
    health = f"{url}/api/v1/health"
    try:
        answer = httpx.get(health, verify=verify, timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise UnavailableError(f"controller not healthy: GET {health}: {exc}") from exc
    if answer.status_code != 200:
        said = answer.status_code
        raise UnavailableError(f"controller not healthy: GET {health} answered {said}")
    return f"controller healthy at {url}"


def _probe_port(tier: str, address: str) -> str:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        raise UnavailableError(f"{tier} not healthy: {address} takes no connection: {exc}") from exc
    return f"{tier} serving at {address}"
