"""Every in-process test runs with the state store guarded: a gRPC or REST handler that
calls it on its event loop fails the test (`tests.support.loopguard`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.loopguard import guard_store_calls


@pytest.fixture(autouse=True)
def _no_store_call_on_a_handlers_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with guard_store_calls(monkeypatch):
        yield
