"""What the clients of one swarm process share: built once per process.

Thousands of clients in one process stay light because everything that is not theirs is
here: the app (one instance, unless each client needs its own data), the TLS credentials,
one pooled HTTP client for assignments (each request carries its client's own token), and
the last downloaded models (read-only, shared). A client keeps only its `ClientState`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

import grpc

from stratafl.client.app import ClientApp
from stratafl.client.assigner import ControllerAssigner
from stratafl.client.models import ModelShelf
from stratafl.client.protocol import ClientProtocol
from stratafl.errors import ConfigError
from stratafl.swarm.stats import SwarmStats

__all__ = ["ASSIGN_TIMEOUT_SECONDS", "HTTP_POOL", "SHELF_MODELS", "app_table", "process_protocol"]

ASSIGN_TIMEOUT_SECONDS = 30.0
HTTP_POOL = 32
"""Connections of a process's shared HTTP client (assignments only)."""
SHELF_MODELS = 2
"""Models kept per process: the round's and the one before (a late validation task)."""


def process_protocol(
    *, controller: str, ca_pem: bytes | None, connecting: int, stats: SwarmStats
) -> ClientProtocol:
    """The protocol every client of a process speaks, counting into ``stats``; building it
    does no I/O (enter its assigner to open the HTTP pool)."""
    verify: ssl.SSLContext | bool = True
    credentials = None
    if ca_pem is not None:
        verify = ssl.create_default_context(cadata=ca_pem.decode())
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    assigner = ControllerAssigner(
        controller,
        verify=verify,
        timeout=ASSIGN_TIMEOUT_SECONDS,
        pool=min(HTTP_POOL, connecting),
    )
    return ClientProtocol(
        assigner,
        channel_credentials=credentials,
        shelf=ModelShelf(SHELF_MODELS, shared=True),
        counters=stats,
        connecting=asyncio.Semaphore(connecting),
        final_errors=(ConfigError,),  # a refused device keeps knocking, as a fleet's would
    )


def app_table(apps: Sequence[ClientApp]) -> Callable[[int], ClientApp]:
    """Client index -> its app: one app for all, or one per client."""
    if len(apps) == 1:
        only = apps[0]
        return lambda _index: only
    return apps.__getitem__
