"""Shared fixtures for the process-level tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from stratafl.launch.federation import FederationSpec, LocalFederation
from tests.support.paths import TEST_APP

POSTGRES_ADMIN = os.environ.get(
    "STRATA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The real PostgreSQL the tests use (trust auth on loopback); each test gets a new database."""

POSTGRES_UNREACHABLE = (
    f"PostgreSQL at {make_url(POSTGRES_ADMIN).render_as_string(hide_password=True)} is not "
    "reachable: start it or set STRATA_TEST_POSTGRES; CI requires it"
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Fold every PostgreSQL skip into one summary line: pytest reports a skip raised in a
    fixture at each test's own line, which would be one line per test."""
    report: pytest.TestReport = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and POSTGRES_UNREACHABLE in longrepr[2]:
        report.longrepr = (__file__, None, longrepr[2])
    return report


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database as a SQLAlchemy URL; dropped after the test.

    With no server to reach, the test is skipped with how to run it, except where ``CI``
    is set: there the PostgreSQL tests are required, so it fails.
    """
    name = f"strata_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            pytest.fail(POSTGRES_UNREACHABLE)
        pytest.skip(POSTGRES_UNREACHABLE)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


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
