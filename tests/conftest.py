"""Shared fixtures: local federations and an S3 server here; the state store on every backend
(`tests.support.databases`) and the REST app on loopback (`tests.support.served`) as plugins."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stratafl.launch.federation import FederationSpec, LocalFederation
from tests.support.paths import TEST_APP

pytest_plugins = ["tests.support.databases", "tests.support.served"]
"""Fixtures every test folder shares: the state store on each backend, the REST app served."""


@pytest.fixture
def federation(tmp_path: Path) -> Callable[..., LocalFederation]:
    """A factory of local federations (use as a context manager) running the test app."""

    def make(
        clients: int,
        combiners: int,
        database_url: str | None = None,
        model_store: str | None = None,
    ) -> LocalFederation:
        spec = FederationSpec(
            app=TEST_APP,
            clients=clients,
            combiners=combiners,
            workdir=tmp_path / "fed",
            database_url=database_url,
            model_store=model_store,
        )
        return LocalFederation(spec)

    return make


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local S3-compatible server (moto's, as a process on 127.0.0.1) for the whole run;
    its URL. It is reached as a user would reach S3: through the standard ``AWS_*``
    variables (endpoint, dummy keys), which every tier process started later inherits."""
    with socket.socket() as probe:  # a free port; moto cannot announce the one it took
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"  # a pipe left unread would fill
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    server.wait()
                    pytest.fail(f"moto's S3 server did not start at {url}:\n{log_path.read_text()}")
                time.sleep(0.05)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ENDPOINT_URL", url)
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def s3_store(s3_server: str) -> str:
    """A model store URL in a bucket of its own on the local S3 server (made on first use)."""
    return f"s3://strata-test-{uuid.uuid4().hex[:12]}/models"
