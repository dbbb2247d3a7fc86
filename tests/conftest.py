"""Shared fixtures for the process-level tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from stratafl.sim.launcher import FederationSpec, LocalFederation

TEST_APP = f"{Path(__file__).parent / 'federation_apps.py'}:make_app"
"""The small client app of federation_apps.py, loaded by path in every client process."""


POSTGRES_ADMIN = os.environ.get(
    "STRATA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""The real PostgreSQL the tests use (trust auth on loopback); each test gets a new database."""


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database as a SQLAlchemy URL; dropped after the test."""
    name = f"strata_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
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

    def make(clients: int, combiners: int, database_url: str | None = None) -> LocalFederation:
        spec = FederationSpec(
            app=TEST_APP,
            clients=clients,
            combiners=combiners,
            workdir=tmp_path / "fed",
            database_url=database_url,
        )
        return LocalFederation(spec)

    return make
