"""The controller's gRPC servicer: combiners register, heartbeat and fetch models here.

On a secured link the caller is a verified combiner identity (`current_caller()`): the
combiner id it registers, heartbeats and reports for must be its token's subject, the host
it registers at one its token names (also when it serves an organisation's own
certificate, which the controller did not sign), and no
combiner can take an address another combiner registered (online or not). Every handler awaits what
discovery records in the state store, which runs off the event loop (`store.offloop`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import grpc.aio

from stratafl.controller.discovery import Discovery
from stratafl.errors import ConfigError, NotFoundError
from stratafl.params import TensorSpec
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.security.certs import host_name
from stratafl.store.models import ModelStore
from stratafl.transport.auth import current_caller
from stratafl.transport.error_codes import status_of
from stratafl.transport.streams import header_to_proto, send_model, stream_chunks

MAX_ADDRESS_CHARS = 256
MAX_CLIENTS_PER_COMBINER = 100_000
MAX_CLIENT_IDS = 200_000


def _unallowed_host(address: str) -> str:
    """Why a secured caller may not register at ``address`` (empty: it may): its host
    must be one its token names, as a certificate the controller signs would."""
    caller = current_caller()
    if caller is None:
        return ""
    host = address.rsplit(":", 1)[0].removeprefix("[").removesuffix("]")
    try:
        allowed = {host_name(name) for name in caller.hosts}
        if host_name(host) in allowed:
            return ""
    except ConfigError:
        pass
    return (
        f"address {address}: host {host!r} is not one the token of {caller.subject} names "
        f"({', '.join(caller.hosts) or 'none'}); advertise one of them, or ask the admin for "
        "a token with it (strata token create --role combiner --host H)"
    )


class ControllerServicer(pb_grpc.ControllerServicer):
    def __init__(
        self,
        discovery: Discovery,
        models: ModelStore,
        revoked: Callable[[], list[str]] = list,
    ) -> None:
        self._discovery = discovery
        self._models = models
        self._revoked = revoked

    async def _check_combiner(self, combiner_id: str, context: grpc.aio.ServicerContext) -> None:
        """On a secured link, a combiner speaks only for the id its token names."""
        caller = current_caller()
        if caller is not None and caller.subject != combiner_id:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token belongs to combiner {caller.subject!r}, not {combiner_id!r}; "
                "start the combiner with --id matching its token",
            )

    async def RegisterCombiner(  # noqa: N802 - gRPC method name
        self, request: pb.CombinerInfo, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        if not request.combiner_id or not request.address:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "combiner_id and address are required"
            )
        if len(request.address) > MAX_ADDRESS_CHARS or not (
            0 <= request.max_clients <= MAX_CLIENTS_PER_COMBINER
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"address must be at most {MAX_ADDRESS_CHARS} characters and max_clients "
                f"between 1 and {MAX_CLIENTS_PER_COMBINER}",
            )
        await self._check_combiner(request.combiner_id, context)
        owner = await self._discovery.owner_of(request.address)
        if owner is not None and owner != request.combiner_id:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"address {request.address} belongs to combiner {owner!r} (online or "
                "restarting); advertise this combiner's own address",
            )
        refusal = _unallowed_host(request.address)
        if refusal:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)
        await self._discovery.register(
            request.combiner_id, request.address, request.max_clients or 1000
        )
        return pb.Ack(ok=True)

    async def Heartbeat(  # noqa: N802
        self, request: pb.CombinerHeartbeat, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatReply:
        await self._check_combiner(request.combiner_id, context)
        if len(request.client_ids) > MAX_CLIENT_IDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many client ids")
        known = await self._discovery.heartbeat(request.combiner_id, list(request.client_ids))
        return pb.HeartbeatReply(
            ok=known,
            message="" if known else "unknown combiner: register again",
            revoked_token_ids=self._revoked(),
        )

    async def ReportClientEvent(  # noqa: N802
        self, request: pb.ClientEvent, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        await self._check_combiner(request.combiner_id, context)
        await self._discovery.client_event(
            request.combiner_id, request.client_id, request.connected
        )
        return pb.Ack(ok=True)

    async def DownloadModel(  # noqa: N802
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelChunk]:
        """Stream a stored model from wherever the model store keeps it (a folder, S3...),
        1 MiB at a time with every read off the event loop; the combiner counts what it
        received for its round. On a secured link a combiner gets only the models of the
        rounds this controller sent it (`SentModels`)."""
        caller = current_caller()
        if caller is not None and not self._discovery.sent_models.was_sent(
            caller.subject, request.model_id
        ):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"model {request.model_id[:64]!r} is not the model of a round sent to "
                f"combiner {caller.subject!r}; a combiner fetches only its rounds' models",
            )

        def open_model() -> tuple[list[TensorSpec], Iterator[bytes]]:
            return stream_chunks(self._models.open(request.model_id))

        try:
            specs, data = await asyncio.to_thread(open_model)
        except NotFoundError as exc:
            await context.abort(status_of(exc), str(exc))
        messages = send_model(pb.ModelChunk, header_to_proto(request.model_id, specs), data)
        while (message := await asyncio.to_thread(next, messages, None)) is not None:
            yield message
