"""One swarm client: the loop of `stratafl.client.runtime.ClientRuntime`, as a coroutine.

It asks the controller for a combiner (``POST /assign`` with its own token), opens its own
channel and task stream, downloads the model of each task and uploads its own update, and
reconnects with jittered backoff when the stream ends: the same calls, in the same order,
with the same reactions (ABORTED: moved by the controller; UNAVAILABLE: the combiner is
reported as failed at the next assignment). Its state is its identity, its index (which
app it uses), its backoff and the id of the last model it downloaded: a few hundred bytes
beside its gRPC channel (and, in a top-k session only, its error-feedback residuals). It
encodes its updates with the session's codec, as the client runtime does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import traceback

import grpc
import grpc.aio

from stratafl.compression import Codec, Compression, ErrorFeedback, encode_update, parse_compression
from stratafl.errors import ConfigError, StrataError
from stratafl.params import Params
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.restapi.schema import Assignment
from stratafl.swarm.identities import Identity
from stratafl.swarm.shared import ProcessShared
from stratafl.swarm.wire import bearer_metadata, receive_params, update_messages
from stratafl.transport.backoff import Backoff
from stratafl.transport.channels import open_aio_channel

__all__ = ["BACKOFF_BASE_SECONDS", "MAX_BACKOFF_SECONDS", "STREAM_OPEN_KEY", "SwarmClient"]

log = logging.getLogger("stratafl.swarm")

BACKOFF_BASE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
"""As the client runtime's: uniform in [0, min(5 s, 0.2 s * 2**failures)]."""
STREAM_OPEN_KEY = "strata-stream-open"
"""The initial metadata a combiner sends once it accepted a task stream."""
MAX_FAILURE_REASON_CHARS = 2000


class SwarmClient:
    """A client of a swarm process; `run` serves tasks until the task is cancelled."""

    __slots__ = ("_feedback", "_last_model", "backoff", "identity", "index")

    def __init__(self, identity: Identity, index: int, rng: random.Random) -> None:
        self.identity = identity
        self.index = index
        """Which of the process's apps this client uses."""
        self.backoff = Backoff(BACKOFF_BASE_SECONDS, MAX_BACKOFF_SECONDS, rng=rng)
        self._last_model: str | None = None
        self._feedback: ErrorFeedback | None = None

    async def run(self, shared: ProcessShared) -> None:
        """Ask for a combiner, serve its task stream, and again whenever it ends."""
        stats, failed = shared.stats, None
        while True:
            try:
                async with shared.connecting:
                    assignment = await shared.assign(self.identity, failed)
            except ConfigError:
                raise  # a bad URL or id: no retry helps
            except StrataError as exc:  # unreachable or refused: the controller may recover
                stats.assign_errors += 1
                log.debug("%s: no combiner: %s", self.identity.client_id, exc)
                await asyncio.sleep(self.backoff.next_delay())
                continue
            failed = None
            try:
                await self._serve(shared, assignment)
            except grpc.aio.AioRpcError as exc:
                stats.stream_errors += 1
                if exc.code() == grpc.StatusCode.ABORTED:  # the controller evens the load
                    stats.moves += 1
                elif exc.code() == grpc.StatusCode.UNAVAILABLE:  # gone, not merely full
                    failed = assignment.combiner_id
                log.info(
                    "%s: stream to %s ended (%s: %s)",
                    self.identity.client_id,
                    assignment.combiner_id,
                    exc.code().name,
                    exc.details(),
                )
            await asyncio.sleep(self.backoff.next_delay())

    async def _serve(self, shared: ProcessShared, assignment: Assignment) -> None:
        """Serve ``assignment``'s task stream until it ends, on a channel of our own."""
        metadata = bearer_metadata(self.identity.token)
        channel = open_aio_channel(assignment.address, credentials=shared.channel_credentials)
        async with channel:
            stub = pb_grpc.CombinerStub(channel)
            call = stub.TaskStream(
                pb.ClientHello(client_id=self.identity.client_id), metadata=metadata
            )
            async with shared.connecting:  # the TLS handshake is the costly part of a connect
                opened = any(key == STREAM_OPEN_KEY for key, _ in await call.initial_metadata())
            if opened:
                self.backoff.reset()
                shared.stats.streams_opened += 1
                shared.stats.connected += 1
            try:
                async for task in call:
                    await self._handle(shared, stub, task)
            finally:
                if opened:
                    shared.stats.connected -= 1

    async def _handle(
        self, shared: ProcessShared, stub: pb_grpc.CombinerStub, task: pb.Task
    ) -> None:
        stats, client_id = shared.stats, self.identity.client_id
        metadata = bearer_metadata(self.identity.token)
        stats.tasks += 1
        try:
            params = await self._download(shared, stub, task)
            config = json.loads(task.config_json or "{}")
            if task.kind == pb.TRAIN:
                started = time.monotonic()
                result = await shared.train(self.index, params, config)
                compression = parse_compression(task.compression or "none")
                encoded = result.params
                if compression.is_delta:  # the session's codec: as the client runtime encodes
                    feedback = self._feedback_for(task.session_id, compression)
                    encoded = await asyncio.to_thread(
                        encode_update, result.params, params, compression, feedback
                    )
                seconds = time.monotonic() - started
                ack = await stub.UploadUpdate(
                    update_messages(task, client_id, encoded, result, seconds, str(compression)),
                    metadata=metadata,
                )
                if ack.ok:
                    stats.updates_accepted += 1
                else:
                    stats.updates_refused += 1
                    log.warning("%s: update refused: %s", client_id, ack.message)
            elif task.kind == pb.VALIDATE:
                metrics = await shared.validate(self.index, params, config)
                report = pb.ValidationReport(
                    task_id=task.task_id,
                    client_id=client_id,
                    metrics={k: float(v) for k, v in metrics.items()},
                )
                await stub.ReportValidation(report, metadata=metadata)
                stats.validations += 1
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            raise
        except Exception as exc:  # the app failed: tell the combiner instead of vanishing
            stats.app_failures += 1
            log.warning("%s: task %s failed: %s", client_id, task.task_id, exc)
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            failure = pb.TaskFailure(
                task_id=task.task_id,
                client_id=client_id,
                reason=reason[:MAX_FAILURE_REASON_CHARS],
            )
            await stub.ReportFailure(failure, metadata=metadata)

    def _feedback_for(self, session_id: str, compression: Compression) -> ErrorFeedback | None:
        """Top-k's residuals, kept by this client in memory only (a model's worth of
        floats per client, and only in a top-k session); no other codec keeps any."""
        if compression.codec != Codec.TOPK:
            return None
        if self._feedback is None:
            self._feedback = ErrorFeedback()
        return self._feedback.for_session(session_id)

    async def _download(
        self, shared: ProcessShared, stub: pb_grpc.CombinerStub, task: pb.Task
    ) -> Params:
        """The task's model: downloaded by this client, unless it is the one it downloaded
        last (then the process's copy of it, as the client runtime's cache would)."""
        if self._last_model == task.model_id:
            shelved = shared.shelf.get(task.model_id)
            if shelved is not None:
                return shelved
        messages = stub.DownloadModel(
            pb.ModelRequest(model_id=task.model_id, task_id=task.task_id),
            metadata=bearer_metadata(self.identity.token),
        )
        params = await receive_params(messages, f"model {task.model_id} from the combiner")
        shared.shelf.put(task.model_id, params)
        self._last_model = task.model_id
        return params
