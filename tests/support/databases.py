"""Fixtures for the state store on every backend (a pytest plugin, see tests/conftest.py).

`postgres_url` gives a test a new, empty database on the real PostgreSQL (dropped after it),
so tests running at once never share one; `database_url` and `store` run a test once on
SQLite (the embedded default) and once on PostgreSQL, the store contract on both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from stratafl.store.state import StateStore

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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty state database's URL: a SQLite file in the test's folder, then a new
    PostgreSQL database (`postgres_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(database_url: str) -> Iterator[StateStore]:
    """An open state store on `database_url`, closed after the test."""
    state = StateStore(database_url).open()
    yield state
    state.close()
