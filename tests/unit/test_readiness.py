"""`strata health` reads a tier's ready file and probes what it names: the controller's
health endpoint, a combiner's gRPC port, a client's open stream; a ready file a previous
run left is removed when a tier starts, so it never vouches for a tier not yet serving."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from stratafl.cli.errors import run
from stratafl.cli.main import app
from stratafl.client.main import ClientOptions
from stratafl.errors import ConfigError, UnavailableError
from stratafl.launch.readiness import check_ready
from stratafl.launch.tier import run_tier
from tests.support.loopback import LoopbackAPI


def _ready(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "ready.json"
    path.write_text(json.dumps(fields))
    return path


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nobody listens once it is closed


def test_no_ready_file_is_not_ready(tmp_path: Path) -> None:
    with pytest.raises(UnavailableError, match="does not exist yet"):
        check_ready(tmp_path / "ready.json")


def test_the_controller_is_healthy_while_its_health_endpoint_answers(
    served: LoopbackAPI, tmp_path: Path
) -> None:
    assert "healthy" in check_ready(_ready(tmp_path, url=served.url, ca_file=None))
    gone = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(UnavailableError, match="controller not healthy"):
        check_ready(_ready(tmp_path, url=gone, ca_file=None))


def test_a_combiner_is_healthy_while_its_port_takes_connections(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert check_ready(_ready(tmp_path, grpc_address=address, metrics_url=None))
    with pytest.raises(UnavailableError, match="takes no connection"):
        check_ready(_ready(tmp_path, grpc_address=f"127.0.0.1:{_closed_port()}"))


def test_a_client_is_ready_once_it_wrote_its_stream(tmp_path: Path, capsys) -> None:
    path = _ready(tmp_path, combiner_id="combiner-a", combiner_address="combiner-a:7443")
    assert run(app, ["health", "--ready-file", str(path)]) == 0
    assert "combiner-a" in capsys.readouterr().out


def test_strata_health_says_what_is_not_ready_in_one_line(tmp_path: Path, capsys) -> None:
    assert run(app, ["health", "--ready-file", str(tmp_path / "none.json")]) != 0
    said = capsys.readouterr().err.strip()
    assert said.startswith("error: not ready") and "\n" not in said


def test_a_tier_removes_the_ready_file_its_previous_run_left(tmp_path: Path) -> None:
    stale = _ready(tmp_path, combiner_id="combiner-a")
    options = ClientOptions(
        controller="http://127.0.0.1:1", app="no_such_module:make_app", insecure=True,
        ready_file=stale,
    )  # fmt: skip
    with pytest.raises(ConfigError):  # the app does not load: the client never serves
        run_tier(options)
    assert not stale.exists()
