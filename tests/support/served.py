"""The `served` fixture: the controller's REST app on loopback HTTP (`LoopbackAPI`) for one
test (a pytest plugin, see tests/conftest.py).

A test module that needs a tighter bound on open event streams overrides
`loopback_max_streams` with a fixture of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stratafl.controller.events import MAX_STREAMS
from tests.support.loopback import LoopbackAPI


@pytest.fixture
def loopback_max_streams() -> int:
    """How many event streams `served` keeps open at once: the controller's own bound."""
    return MAX_STREAMS


@pytest.fixture
def served(tmp_path: Path, loopback_max_streams: int) -> Iterator[LoopbackAPI]:
    """The REST app over a new controller in ``tmp_path``, on a free port; closed after."""
    server = LoopbackAPI(tmp_path, max_streams=loopback_max_streams)
    try:
        yield server
    finally:
        server.close()
