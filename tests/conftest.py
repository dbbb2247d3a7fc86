"""Shared fixtures for the process-level tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stratafl.sim.launcher import FederationSpec, LocalFederation

TEST_APP = f"{Path(__file__).parent / 'federation_apps.py'}:make_app"
"""The small client app of federation_apps.py, loaded by path in every client process."""


@pytest.fixture
def federation(tmp_path: Path) -> Callable[[int, int], LocalFederation]:
    """A factory of local federations (use as a context manager) running the test app."""

    def make(clients: int, combiners: int) -> LocalFederation:
        spec = FederationSpec(
            app=TEST_APP, clients=clients, combiners=combiners, workdir=tmp_path / "fed"
        )
        return LocalFederation(spec)

    return make
