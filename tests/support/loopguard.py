"""A check that fails when a handler calls the state store on its event loop.

The controller's gRPC servicer, discovery and REST routers share one event loop with the
rounds; each store call they make must go through `StateStore.off_loop` (a worker
thread). `guard_store_calls` wraps every public method of `StateStore` so that a call made
while an event loop runs in the calling thread raises `StoreCallOnLoop`, when one of those
handlers led to it, directly or through the code it calls (the session runner's start, stop
and cancel). Worker threads run no loop, so calls through `off_loop` pass; the rounds'
own task, recovery and start-up are not a handler's call and are not judged here.

``tests/inprocess/conftest.py`` applies it to every in-process test: the real REST app, the
real gRPC servicer and discovery run under it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import stratafl.controller
from stratafl.store.state import StateStore

CONTROLLER = Path(stratafl.controller.__file__).parent
HANDLERS = (CONTROLLER / "servicer.py", CONTROLLER / "discovery.py", CONTROLLER / "rest")


class StoreCallOnLoop(AssertionError):
    """A state-store call blocked the event loop of a gRPC or REST handler."""


def handler_on_the_loop(frame: FrameType | None) -> FrameType | None:
    """The handler frame that made this store call on a running loop, if one did: the
    nearest handler's frame above ``frame``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread (off_loop) or plain synchronous code
        return None
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if any(path == h or path.is_relative_to(h) for h in HANDLERS):
            return frame
        frame = frame.f_back
    return None


def _guarded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        handler = handler_on_the_loop(sys._getframe(1))
        if handler is not None:
            where = f"{handler.f_code.co_filename}:{handler.f_lineno}"
            raise StoreCallOnLoop(
                f"StateStore.{name} ran on the event loop of the handler at {where}; "
                f"call it as `await store.off_loop.read(store.{name}, ...)` (or .write)"
            )
        return method(*args, **kwargs)

    return call


def public_methods() -> list[str]:
    """Every public method of `StateStore` (its mixins' included)."""
    return [
        name
        for name, member in inspect.getmembers(StateStore, inspect.isfunction)
        if not name.startswith("_")
    ]


@contextmanager
def guard_store_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every `StateStore` method raises `StoreCallOnLoop` when a handler calls it on its loop."""
    for name in public_methods():
        monkeypatch.setattr(StateStore, name, _guarded(name, getattr(StateStore, name)))
    yield
