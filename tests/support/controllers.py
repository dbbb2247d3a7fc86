"""The one way tests build a controller: whole, in one step, as `strata controller start`
does, with nothing assigned to it afterwards.

A test controller keeps its state in SQLite in its work folder and announces a gRPC
address no one listens on (`UNSERVED_GRPC`): the REST tests need no combiner. ``secure``
gives it a real trust root (a CA and token signer in ``workdir/trust``), as the default
controller has; without it the controller runs as with ``--insecure``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stratafl.controller.events import EventFeed
from stratafl.controller.retention import RetentionPolicy
from stratafl.controller.trust import Trust
from stratafl.controller.wiring import Controller
from stratafl.store.state import StateStore
from stratafl.store.tables import sqlite_url

__all__ = ["UNSERVED_GRPC", "new_controller", "open_controller"]

UNSERVED_GRPC = "127.0.0.1:1"
"""The gRPC address a test controller announces at /discovery: nothing serves it."""


def new_controller(
    workdir: Path,
    *,
    secure: bool = False,
    model_store: str | None = None,
    retention: RetentionPolicy | None = None,
    events: EventFeed | None = None,
) -> Controller:
    """A controller in ``workdir`` whose state store is not open yet (`open_controller`
    opens it); ``secure`` loads (or makes) a trust root for 127.0.0.1."""
    trust = Trust.load_or_create(workdir / "trust", ["127.0.0.1"]) if secure else None
    return Controller(
        workdir,
        StateStore(sqlite_url(workdir)),
        grpc_address=UNSERVED_GRPC,
        trust=trust,
        model_store=model_store,
        retention=retention,
        events=events,
    )


@contextmanager
def open_controller(
    workdir: Path,
    *,
    secure: bool = False,
    model_store: str | None = None,
    retention: RetentionPolicy | None = None,
    events: EventFeed | None = None,
) -> Iterator[Controller]:
    """`new_controller` with its state store open until the block ends (``workdir`` is
    made if it is missing)."""
    workdir.mkdir(parents=True, exist_ok=True)
    controller = new_controller(
        workdir, secure=secure, model_store=model_store, retention=retention, events=events
    )
    controller.store.open()
    try:
        yield controller
    finally:
        controller.store.close()
