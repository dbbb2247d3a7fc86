"""Servers and channels with the options every stratafl link needs.

The seams for security live here: every server takes interceptors and server credentials,
every channel takes channel credentials. Today they default to insecure loopback links;
TLS and token interceptors plug in without touching the tiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio

MAX_MESSAGE_BYTES = 9 * 1024 * 1024
"""The largest message a peer may send: a chunk (`streams.CHUNK_BYTES`) or a model header
naming many tensors fits with room to spare; gRPC's default is only 4 MiB."""

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # With the defaults (1000 / 3000) a few hundred of 3,000 simultaneous calls hang
    # silently: cross-device fleets need these raised.
    ("grpc.server.max_pending_requests", 20000),
    ("grpc.server.max_pending_requests_hard_limit", 40000),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    # No BDP probing: on loopback it grows every stream's window to many MB, and with
    # hundreds of concurrent transfers that buffering, not the model, fills the memory.
    ("grpc.http2.bdp_probe", 0),
]

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Each client gets its own TCP connection even when many share one process.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.http2.bdp_probe", 0),
]


@dataclass(frozen=True)
class LinkSecurity:
    """How a process secures its gRPC links: the seam for TLS and auth tokens.

    Empty today (insecure loopback). A later release fills it from the CLI (certificates,
    tokens) and every tier passes it on unchanged.
    """

    server_credentials: grpc.ServerCredentials | None = None
    channel_credentials: grpc.ChannelCredentials | None = None
    interceptors: Sequence[grpc.aio.ServerInterceptor] = field(default_factory=tuple)


INSECURE_LOOPBACK = LinkSecurity()
"""No TLS, no tokens: the default for a federation on one machine."""


def create_aio_server(
    address: str,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """An asyncio gRPC server bound to ``address`` (``host:0`` picks a free port)."""
    server = grpc.aio.server(interceptors=list(interceptors), options=SERVER_OPTIONS)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return server, port


def open_aio_channel(
    address: str, *, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def open_channel(
    address: str, *, credentials: grpc.ChannelCredentials | None = None
) -> grpc.Channel:
    """A blocking channel, for the client runtime which runs user code synchronously."""
    if credentials is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)
