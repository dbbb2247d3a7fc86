"""The controller's gRPC servicer: combiners register, heartbeat and fetch models here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio

from stratafl.controller.discovery import Discovery
from stratafl.errors import NotFoundError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.store.models import ModelStore
from stratafl.transport.status import status_of
from stratafl.transport.streams import file_chunks, header_to_proto, send_model


class ControllerServicer(pb_grpc.ControllerServicer):
    def __init__(self, discovery: Discovery, models: ModelStore) -> None:
        self._discovery = discovery
        self._models = models

    async def RegisterCombiner(  # noqa: N802 - gRPC method name
        self, request: pb.CombinerInfo, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        if not request.combiner_id or not request.address:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "combiner_id and address are required"
            )
        self._discovery.register(request.combiner_id, request.address, request.max_clients or 1000)
        return pb.Ack(ok=True)

    async def Heartbeat(  # noqa: N802
        self, request: pb.CombinerHeartbeat, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        known = self._discovery.heartbeat(request.combiner_id, list(request.client_ids))
        return pb.Ack(ok=known, message="" if known else "unknown combiner: register again")

    async def ReportClientEvent(  # noqa: N802
        self, request: pb.ClientEvent, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        self._discovery.client_event(request.combiner_id, request.client_id, request.connected)
        return pb.Ack(ok=True)

    async def DownloadModel(  # noqa: N802
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelChunk]:
        """Stream a stored model; the combiner counts what it received for its round."""
        try:
            path = self._models.local_path(request.model_id)
        except NotFoundError as exc:
            await context.abort(status_of(exc), str(exc))
        specs, data = file_chunks(path)
        for message in send_model(pb.ModelChunk, header_to_proto(request.model_id, specs), data):
            yield message
