"""The combiner's gRPC servicer: thin handlers over the registry, the rounds and the cache.

Clients open ``TaskStream`` and receive tasks on it (no open port on the client). The
controller calls ``RunRound`` and receives the partial result on the response stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio

from stratafl.combiner.claims import Caller
from stratafl.combiner.limits import TooManyTransfers
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry, StreamEnd
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.errors import ModelFormatError, StrataError
from stratafl.observe.metrics import Link
from stratafl.params import total_bytes
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.transport.auth import current_caller
from stratafl.transport.error_codes import status_of
from stratafl.transport.streams import (
    file_chunks,
    header_to_proto,
    receive_model,
    send_model,
)
from stratafl.transport.task_stream import STREAM_OPEN_KEY

MAX_CLIENT_ID_CHARS = 256
MAX_MOVES = 100_000
MOVED_MESSAGE = "rebalance: ask the controller for a combiner"
"""Why a task stream ends with ABORTED: the controller moves this client elsewhere."""


@contextlib.contextmanager
def cancel_after(seconds: float) -> Iterator[None]:
    """Cancel the current task (the RPC) after ``seconds``: a response stream whose reader
    stalls is blocked inside gRPC, where no timeout of ours can reach it."""
    task = asyncio.current_task()
    assert task is not None
    timer = asyncio.get_running_loop().call_later(seconds, task.cancel)
    try:
        yield
    finally:
        timer.cancel()


class CombinerServicer(pb_grpc.CombinerServicer):
    def __init__(
        self, registry: ClientRegistry, cache: ModelCache, rounds: CombinerRoundRunner
    ) -> None:
        self._registry = registry
        self._cache = cache
        self._rounds = rounds

    # -- clients --------------------------------------------------------------------------

    async def _caller(self, claimed: str, context: grpc.aio.ServicerContext) -> Caller:
        """The client calling: its token's subject on a secured link (a different ``claimed``
        id is refused); on an insecure loopback link, the id it sends."""
        claims = current_caller()
        if claims is None:
            if not claimed:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a client_id is required")
            return Caller(claimed[:MAX_CLIENT_ID_CHARS])
        if claimed and claimed != claims.subject:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token belongs to client {claims.subject!r}, not {claimed!r}",
            )
        return Caller(claims.subject, claims.max_examples)

    async def TaskStream(  # noqa: N802 - gRPC method name
        self, request: pb.ClientHello, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Task]:
        caller = await self._caller(request.client_id, context)
        if self._registry.is_connected(caller.client_id):
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"client {caller.client_id!r} already has a task stream open here; one stream "
                "per client (if that client died, its stream closes within 30 s: retry then)",
            )
        if self._registry.is_full_for(caller.client_id):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"combiner {self._rounds.combiner_id} is full ({self._registry.max_clients} "
                "clients); ask the controller for another",
            )
        claims = current_caller()
        client = self._registry.connect(caller.client_id, claims.token_id if claims else None)
        try:
            # Headers now, before any task: the client knows its stream is open (and resets
            # its reconnect backoff) without waiting for the first round.
            await context.send_initial_metadata(((STREAM_OPEN_KEY, self._rounds.combiner_id),))
            while True:
                task = await client.tasks.get()
                if task is StreamEnd.REVOKED:
                    return
                if task is StreamEnd.MOVED:
                    await context.abort(grpc.StatusCode.ABORTED, MOVED_MESSAGE)
                assert isinstance(task, pb.Task)
                yield task
        finally:
            if self._registry.disconnect(client):
                self._rounds.client_left(client.client_id)

    async def DownloadModel(  # noqa: N802
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelChunk]:
        """Serve the model an open task of the caller names, and no other: a client that
        was not sent a task has nothing to download, and no client holds more than its
        share of the transfer slots (`combiner.limits`)."""
        claims = current_caller()
        try:
            outcome = self._rounds.download_for(
                request.task_id, request.model_id, claims.subject if claims else None
            )
        except StrataError as exc:
            await context.abort(status_of(exc), str(exc))
        path = self._cache.cached_path(request.model_id)
        if path is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {request.model_id!r} is not part of a round on combiner "
                f"{self._rounds.combiner_id}",
            )
        assert path is not None
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(self._rounds.limits.hold(outcome.client_id))
            except TooManyTransfers as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            # a reader that stalls blocks inside gRPC: the deadline cancels the call itself,
            # so a slot is held at most grace + size / rate, whoever the reader is. The wait
            # for a slot is not part of it (thousands of clients queue for the slots at a
            # round's start), and the file is opened only once a slot is ours: no
            # descriptor per waiter.
            async with self._rounds.transfers:
                specs, data = file_chunks(path)
                with cancel_after(self._rounds.transfer_seconds(total_bytes(specs))):
                    header = header_to_proto(request.model_id, specs)
                    for message in send_model(pb.ModelChunk, header, data):
                        size = message.ByteSize()
                        self._rounds.metrics.sent(Link.CLIENT, size)
                        outcome.bytes_down += size
                        yield message

    async def UploadUpdate(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.UpdateChunk], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        try:
            incoming = await receive_model(request_iterator, "an update stream")
        except ModelFormatError as exc:
            return pb.Ack(ok=False, message=str(exc))
        caller = await self._caller(incoming.header.client_id, context)
        try:
            with self._rounds.limits.hold(caller.client_id):
                return await self._rounds.accept_update(incoming, caller)
        except TooManyTransfers as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise  # abort raises: never reached

    async def ReportValidation(  # noqa: N802
        self, request: pb.ValidationReport, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        return self._rounds.accept_validation(
            request, await self._caller(request.client_id, context)
        )

    async def ReportFailure(  # noqa: N802
        self, request: pb.TaskFailure, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        return self._rounds.accept_failure(request, await self._caller(request.client_id, context))

    # -- controller -----------------------------------------------------------------------

    async def GetStatus(  # noqa: N802
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CombinerStatus:
        return pb.CombinerStatus(
            combiner_id=self._rounds.combiner_id, client_ids=self._registry.ids()
        )

    async def MoveClients(  # noqa: N802
        self, request: pb.MoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.MoveReply:
        """End the named clients' streams so they ask the controller for a combiner again;
        a client with a task in flight stays (the controller asks again next time)."""
        if len(request.client_ids) > MAX_MOVES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {MAX_MOVES} clients move at once, got {len(request.client_ids)}",
            )
        moved = self._registry.move(request.client_ids, busy=self._rounds.busy_clients())
        return pb.MoveReply(moved=moved)

    async def RunRound(  # noqa: N802
        self, request: pb.RoundSpec, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RoundResultChunk]:
        try:
            result = await self._rounds.run(request)
        except StrataError as exc:
            await context.abort(status_of(exc), str(exc))
        for message in result.messages():
            self._rounds.metrics.sent(Link.CONTROLLER, message.ByteSize())
            yield message
