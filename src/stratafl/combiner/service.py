"""The combiner's gRPC servicer: thin handlers over the registry, the rounds and the cache.

Clients open ``TaskStream`` and receive tasks on it (no open port on the client). The
controller calls ``RunRound`` and receives the partial result on the response stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio

from stratafl.aggregate import DPGaussian, parse_aggregator
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.rounds import Outcome, RoundState
from stratafl.errors import ConfigError, ModelFormatError, UpdateRejected
from stratafl.modelfile import MappedModelFile, iter_params_bytes
from stratafl.params import TensorSpec, check_same_layout
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.staging.collector import Collector
from stratafl.transport.status import status_of
from stratafl.transport.streams import (
    data_of,
    file_bytes,
    header_to_proto,
    model_chunks,
    specs_from_proto,
    wire_size,
    write_file,
)

MAX_TRANSFERS = 4
"""Model downloads and update uploads that move bytes at the same time."""


class CombinerService(pb_grpc.CombinerServicer):
    def __init__(
        self,
        combiner_id: str,
        workdir: Path,
        registry: ClientRegistry,
        cache: ModelCache,
        *,
        max_transfers: int = MAX_TRANSFERS,
    ) -> None:
        self.combiner_id = combiner_id
        self._workdir = workdir
        self._registry = registry
        self._cache = cache
        self._tasks: dict[str, RoundState] = {}
        # gRPC buffers several chunks per active stream; bounding the streams that move
        # model bytes at once bounds that memory however many clients are connected.
        self._transfers = asyncio.Semaphore(max_transfers)

    # -- clients --------------------------------------------------------------------------

    async def TaskStream(  # noqa: N802 - gRPC method name
        self, request: pb.ClientHello, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Task]:
        if not request.client_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ClientHello needs a client_id")
        if self._registry.is_full_for(request.client_id):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"combiner {self.combiner_id} is full ({self._registry.max_clients} clients); "
                "ask the controller for another",
            )
        client = self._registry.connect(request.client_id)
        try:
            while True:
                task = await client.tasks.get()
                if task is None:
                    return
                yield task
        finally:
            if self._registry.disconnect(client):
                for state in set(self._tasks.values()):
                    state.resolve_client(client.client_id, "dropped", "client disconnected")

    async def DownloadModel(  # noqa: N802
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelChunk]:
        path = self._cache.cached_path(request.model_id)
        if path is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {request.model_id!r} is not part of a round on combiner {self.combiner_id}",
            )
        assert path is not None
        state = self._tasks.get(request.task_id)
        outcome = state.outcome(request.task_id) if state else None
        async with self._transfers:
            for message in model_chunks(request.model_id, *file_bytes(path)):
                if outcome:
                    outcome.bytes_down += message.ByteSize()
                yield message

    async def UploadUpdate(  # noqa: N802
        self, request_iterator: AsyncIterator[pb.UpdateChunk], context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        messages = request_iterator.__aiter__()
        first = await messages.__anext__()
        if first.WhichOneof("part") != "header":
            return pb.Ack(ok=False, message="an update stream must start with its header")
        header = first.header
        state = self._tasks.get(header.task_id)
        if state is None or not state.is_pending(header.task_id):
            return pb.Ack(
                ok=False, message=f"task {header.task_id!r} is not open (late or unknown)"
            )
        outcome = state.outcome(header.task_id)
        if outcome.client_id != header.client_id:
            return pb.Ack(ok=False, message="this task belongs to another client")
        outcome.bytes_up += first.ByteSize()
        path = self._workdir / "updates" / f"{header.task_id}.safetensors"
        try:
            if header.num_examples <= 0:
                raise UpdateRejected(f"num_examples must be positive, got {header.num_examples}")
            specs = specs_from_proto(header.model)
            check_same_layout(state.specs, specs)
            async with self._transfers:
                await write_file(path, specs, _counting(data_of(messages), outcome))
            # Inputs are collected one at a time (one staged update mapped at a time), and
            # the round cannot close between collecting an update and counting it.
            async with state.collect_lock:
                if not state.is_pending(header.task_id):
                    path.unlink(missing_ok=True)
                    return pb.Ack(ok=False, message="the round closed before the update arrived")
                assert state.collector is not None
                await asyncio.to_thread(state.collector.add, path, float(header.num_examples))
                state.resolve(
                    header.task_id,
                    "ok",
                    num_examples=int(header.num_examples),
                    metrics=dict(header.metrics),
                )
        except (UpdateRejected, ModelFormatError) as exc:
            path.unlink(missing_ok=True)
            state.resolve(header.task_id, "rejected", str(exc))
            return pb.Ack(ok=False, message=str(exc))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return pb.Ack(ok=True)

    async def ReportValidation(  # noqa: N802
        self, request: pb.ValidationReport, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        state = self._tasks.get(request.task_id)
        if state is None or not state.is_pending(request.task_id):
            return pb.Ack(ok=False, message=f"task {request.task_id!r} is not open")
        state.resolve(request.task_id, "ok", metrics=dict(request.metrics))
        return pb.Ack(ok=True)

    async def ReportFailure(  # noqa: N802
        self, request: pb.TaskFailure, context: grpc.aio.ServicerContext
    ) -> pb.Ack:
        state = self._tasks.get(request.task_id)
        if state is not None:
            state.resolve(request.task_id, "failed", request.reason[:2000])
        return pb.Ack(ok=True)

    # -- controller -----------------------------------------------------------------------

    async def GetStatus(  # noqa: N802
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.CombinerStatus:
        return pb.CombinerStatus(combiner_id=self.combiner_id, client_ids=self._registry.ids())

    async def RunRound(  # noqa: N802
        self, request: pb.RoundSpec, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RoundResultChunk]:
        started = time.monotonic()
        try:
            model_path, specs = await self._cache.get(request.model_id)
        except grpc.aio.AioRpcError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot fetch model {request.model_id}: {exc.details()}",
            )
        collector = None
        if request.kind == pb.TRAIN:
            try:
                collector = self._collector(request, model_path, specs)
            except ConfigError as exc:
                await context.abort(status_of(exc), str(exc))
        try:
            async for message in self._run_round(request, specs, collector, started):
                yield message
        finally:  # also when the controller goes away mid-round: leave no spooled update
            if collector is not None:
                collector.discard()

    async def _run_round(
        self,
        request: pb.RoundSpec,
        specs: list[TensorSpec],
        collector: Collector | None,
        started: float,
    ) -> AsyncIterator[pb.RoundResultChunk]:
        state = RoundState(request, specs, collector)
        chosen = self._registry.sample(request.num_clients, seed=request.seed)
        for client in chosen:
            task_id = uuid.uuid4().hex
            state.add_task(task_id, client.client_id)
            self._tasks[task_id] = state
            client.tasks.put_nowait(
                pb.Task(
                    task_id=task_id,
                    kind=request.kind,
                    model_id=request.model_id,
                    session_id=request.session_id,
                    round=request.round,
                    config_json=request.config_json or json.dumps({}),
                )
            )
        try:
            if chosen:
                await asyncio.wait_for(state.done.wait(), timeout=request.timeout_seconds)
        except TimeoutError:
            pass
        finally:
            async with state.collect_lock:
                state.close()
            for task_id in state.task_ids():
                self._tasks.pop(task_id, None)
        header = pb.RoundResultHeader(
            combiner_id=self.combiner_id,
            contributors=state.contributors(),
            outcomes=[o.to_proto() for o in state.outcomes.values()],
        )
        partial = None
        if state.collector is not None and state.collector.count > 0:
            try:
                partial, header.total_weight = await asyncio.to_thread(state.collector.result)
            except ConfigError as exc:  # e.g. too few updates for the rule's tolerance
                header.error = str(exc)
        header.seconds = time.monotonic() - started
        if partial is None:
            yield pb.RoundResultChunk(header=header)
            return
        header.model.CopyFrom(header_to_proto("", state.specs))
        yield pb.RoundResultChunk(header=header)
        for chunk in iter_params_bytes(partial):
            yield pb.RoundResultChunk(data=chunk)

    def _collector(
        self, request: pb.RoundSpec, model_path: Path, specs: list[TensorSpec]
    ) -> Collector:
        """The round's rule over this combiner's clients, streaming when the rule allows."""
        rule = parse_aggregator(request.aggregator or "fedavg").rule
        if isinstance(rule, DPGaussian):  # fresh noise for every round and every combiner
            rule = rule.with_noise_key(request.round, zlib.crc32(self.combiner_id.encode()))
        reference = MappedModelFile(model_path)
        fold = rule.fold(reference) if rule.streaming else None
        return Collector(
            specs, fold, lambda updates, weights: rule.aggregate(updates, weights, reference)
        )


async def _counting(data: AsyncIterator[bytes], outcome: Outcome) -> AsyncIterator[bytes]:
    """Count each chunk as the serialized message it arrived in."""
    async for chunk in data:
        outcome.bytes_up += wire_size(chunk)
        yield chunk
