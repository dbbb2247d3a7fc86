"""The combiner's rounds: tasks pushed to its clients, their answers taken, a partial made.

No gRPC here: the servicer hands over the round spec and each client's messages, so a
whole round can run in-process in a test with clients that are plain coroutines.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stratafl.combiner.claims import Caller, check_claim, metrics_problem
from stratafl.combiner.limits import TRANSFERS_PER_CLIENT, TransferLimits
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.receipts import (
    REPORT_RECEIPT_FAILS,
    UPDATE_RECEIPT_FAILS,
    check_receipt_keys,
    receipt_verifies,
)
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.rounds import (
    CLOSED_AT_QUORUM,
    Outcome,
    RoundState,
    collector_for,
    settings_of,
    wait_for_quorum,
)
from stratafl.errors import (
    ConfigError,
    ModelFormatError,
    NotFoundError,
    PermissionDenied,
    UpdateRejected,
)
from stratafl.modelfile.codec import MappedModelFile
from stratafl.observe.combiner_metrics import (
    CombinerMetrics,
    CountingSemaphore,
    Phase,
    RejectReason,
)
from stratafl.observe.metrics import Link
from stratafl.params import Params, specs_of, total_bytes
from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import OutcomeStatus
from stratafl.transport.streams import (
    IncomingModel,
    header_to_proto,
    params_chunks,
    send_model,
)

MAX_TRANSFERS = 4
"""Model downloads and update uploads that move bytes at the same time."""
TRANSFER_GRACE_SECONDS = 30.0
MIN_TRANSFER_BYTES_PER_SECOND = 1_000_000.0
"""A transfer may hold a slot for the grace plus its size at this rate, and no longer."""
TOO_SLOW = "the update arrived too slowly and gave up its transfer slot"


@dataclass
class RoundResult:
    """What the combiner sends back: the header (outcomes, weight) and the partial, if any."""

    header: pb.RoundResultHeader
    partial: Params | None

    def messages(self) -> Iterator[pb.RoundResultChunk]:
        """The result as the stream the controller receives: header, then the partial."""
        if self.partial is None:
            return iter([pb.RoundResultChunk(header=self.header)])
        self.header.model.CopyFrom(header_to_proto("", specs_of(self.partial)))
        return send_model(pb.RoundResultChunk, self.header, params_chunks(self.partial))


class CombinerRoundRunner:
    """Runs rounds over the connected clients; constructing it starts nothing."""

    def __init__(
        self,
        combiner_id: str,
        registry: ClientRegistry,
        cache: ModelCache,
        updates: Path,
        *,
        max_transfers: int = MAX_TRANSFERS,
        transfers_per_client: int = TRANSFERS_PER_CLIENT,
        transfer_grace: float = TRANSFER_GRACE_SECONDS,
        min_transfer_rate: float = MIN_TRANSFER_BYTES_PER_SECOND,
        metrics: CombinerMetrics | None = None,
    ) -> None:
        self.combiner_id = combiner_id
        self.metrics = metrics or CombinerMetrics()
        self._registry = registry
        self._cache = cache
        self._updates = updates
        self._tasks: dict[str, RoundState] = {}
        # gRPC buffers several chunks per active stream; bounding the streams that move
        # model bytes at once bounds that memory however many clients are connected.
        self.transfers = CountingSemaphore(max_transfers)
        self.limits = TransferLimits(transfers_per_client)
        self._transfer_grace = transfer_grace
        self._min_transfer_rate = min_transfer_rate

    def outcome_of(self, task_id: str) -> Outcome | None:
        state = self._tasks.get(task_id)
        return state.outcome(task_id) if state is not None else None

    def download_for(self, task_id: str, model_id: str, subject: str | None) -> Outcome:
        """The outcome of the open task ``task_id`` whose model ``model_id`` the caller may
        download: the task must be pending, name that model, and (``subject``: the caller's
        verified identity; None on an insecure link) have been sent to the caller.
        Raises `NotFoundError` or `PermissionDenied` with the reason."""
        state = self._tasks.get(task_id)
        if not task_id or state is None or not state.is_pending(task_id):
            raise NotFoundError(
                f"no open task {task_id[:64]!r} on combiner {self.combiner_id}: a model is "
                "downloaded with the task that names it, until the task is answered"
            )
        outcome = state.outcome(task_id)
        if subject is not None and outcome.client_id != subject:
            raise PermissionDenied(f"task {task_id[:64]!r} was sent to another client")
        if state.spec.model_id != model_id:
            raise NotFoundError(
                f"task {task_id[:64]!r} names model {state.spec.model_id!r}, not {model_id[:64]!r}"
            )
        return outcome

    async def run(self, spec: pb.RoundSpec) -> RoundResult:
        """One round: raises `ConfigError` (its settings) or `UnavailableError` (model
        unreachable): a spec without a public receipt key for each client is refused."""
        check_receipt_keys(spec)
        settings = settings_of(spec)
        started = time.monotonic()
        cached, fetched = await self._cache.get(spec.model_id)
        self.metrics.received(Link.CONTROLLER, fetched)
        self.metrics.spent(Phase.FETCH, time.monotonic() - started)
        reference = MappedModelFile(cached.path)  # mapped once: the rule and the decoder share it
        collector = collector_for(spec, settings, self.combiner_id, reference)
        try:
            state = RoundState(spec, settings, cached.specs, collector, reference)
            await self._push_and_wait(state)
            header = pb.RoundResultHeader(
                combiner_id=self.combiner_id,
                contributors=state.contributors(),
                model_bytes_down=fetched,
            )
            partial = None
            if collector is not None and collector.count > 0:
                try:
                    partial, header.total_weight, weights = await asyncio.to_thread(
                        collector.partial_result
                    )
                    header.tensor_weights.update(weights)  # empty: every tensor in full
                except ConfigError as exc:  # e.g. too few updates for the rule's tolerance
                    header.error = str(exc)
                state.note_left_out(collector.left_out)
            header.outcomes.extend(o.to_proto() for o in state.outcomes.values())
            header.seconds = time.monotonic() - started
            statuses = [o.status for o in state.outcomes.values()]
            self.metrics.round_closed(spec.kind == pb.TRAIN, statuses, header.seconds, collector)
            return RoundResult(header, partial)
        finally:  # also when the controller goes away mid-round: leave no spooled update
            if collector is not None:
                collector.discard()

    async def _push_and_wait(self, state: RoundState) -> None:
        spec, settings = state.spec, state.settings
        # The client reads the settings in their canonical text (Task's fields stay as
        # they were, so clients of every version read them).
        compression, partial_updates = str(settings.compression), str(settings.partial_updates)
        app = pb.AppRef(sha256=settings.app.sha256, entry=settings.app.entry)
        # The controller chose the clients (it counts only those): a listed one that is not
        # connected is dropped at once, and nobody else gets a task.
        chosen = list(dict.fromkeys(spec.client_ids))
        absent: list[str] = []  # resolved once every task exists: `done` must not fire early
        for client_id in chosen:
            task_id = uuid.uuid4().hex
            state.add_task(task_id, client_id)
            self._tasks[task_id] = state
            client = self._registry.get(client_id)
            if client is None:
                absent.append(task_id)
                continue
            client.tasks.put_nowait(
                pb.Task(
                    task_id=task_id,
                    kind=spec.kind,
                    model_id=spec.model_id,
                    session_id=spec.session_id,
                    round=spec.round,
                    config_json=spec.config_json or json.dumps({}),
                    compression=compression,
                    partial_updates=partial_updates,
                    grant=spec.grant,  # the controller's: clients check it is this round's
                    round_id=spec.round_id,
                    app=app,
                )
            )
        for task_id in absent:
            state.resolve(task_id, OutcomeStatus.DROPPED, "not connected")
        at_quorum = False
        try:
            if chosen:
                at_quorum = await wait_for_quorum(state, spec.timeout_seconds)
        finally:
            async with state.collect_lock:
                state.close(CLOSED_AT_QUORUM if at_quorum else "")
            for task_id in state.task_ids():
                self._tasks.pop(task_id, None)

    def transfer_seconds(self, nbytes: int) -> float:
        """How long one transfer of ``nbytes`` may hold a slot: a stalled or trickling peer
        cannot keep honest clients waiting."""
        return self._transfer_grace + nbytes / self._min_transfer_rate

    async def accept_update(
        self, incoming: IncomingModel[pb.UpdateHeader], caller: Caller
    ) -> pb.Ack:
        """Stage, check and collect one client's update; the reply says why it was refused."""
        header = incoming.header
        found = self._open_task(header.task_id, caller, pb.TRAIN)
        if isinstance(found, pb.Ack):
            return found
        state, outcome = found
        assert state.collector is not None
        if header.task_id in state.arriving:
            return pb.Ack(ok=False, message="an update for this task is already arriving")
        state.arriving.add(header.task_id)
        try:
            return await self._take_update(incoming, caller, state, outcome)
        finally:
            state.arriving.discard(header.task_id)

    async def _take_update(
        self,
        incoming: IncomingModel[pb.UpdateHeader],
        caller: Caller,
        state: RoundState,
        outcome: Outcome,
    ) -> pb.Ack:
        header = incoming.header
        assert state.collector is not None
        count = self.metrics.counting(Link.CLIENT, outcome.add_bytes_up)
        count(incoming.wire_bytes)  # the header's
        num_examples, metrics = int(header.num_examples), dict(header.metrics)
        if not receipt_verifies(
            state.spec, self.combiner_id, outcome.client_id, num_examples, metrics, header.receipt
        ):  # before a byte is staged: the controller would refuse a partial that holds it
            return self._refuse(state, header.task_id, UPDATE_RECEIPT_FAILS)
        path = self._updates / f"{header.task_id}-{uuid.uuid4().hex[:8]}.safetensors"
        collected = False  # from then on the collector owns the file (fold or spool)
        try:
            check_claim(header, state.settings, caller)
            sent, layout = state.announced(header.model)  # all but for partial updates
            async with self.transfers:
                async with asyncio.timeout(self.transfer_seconds(total_bytes(state.specs))):
                    try:
                        await incoming.save(path, header.model, expect=layout, on_bytes=count)
                    finally:
                        self.metrics.spent(Phase.STAGE, incoming.disk_seconds)
            late = await _finish(state.decode(path, sent))  # a compressed update, in place
            # Inputs are collected one at a time (one staged update mapped at a time), and
            # the round cannot close between collecting an update and counting it.
            async with state.collect_lock:
                if not state.is_pending(header.task_id):
                    path.unlink(missing_ok=True)
                    return pb.Ack(ok=False, message="the round closed before the update arrived")
                cancelled = await _finish(
                    asyncio.to_thread(
                        state.collector.add, path, float(header.num_examples), key=header.task_id
                    )
                )
                collected = True
                state.resolve(
                    header.task_id,
                    OutcomeStatus.OK,
                    num_examples=num_examples,
                    metrics=metrics,
                    receipt=header.receipt,
                )
                if cancelled or late:  # counted: now let the client's cancellation go on
                    raise asyncio.CancelledError
        except (TimeoutError, UpdateRejected, ModelFormatError) as exc:
            path.unlink(missing_ok=True)
            reason = TOO_SLOW if isinstance(exc, TimeoutError) else str(exc)
            self.metrics.refused(RejectReason.of(exc))
            state.resolve(header.task_id, OutcomeStatus.REJECTED, reason)
            return pb.Ack(ok=False, message=reason)
        except BaseException:
            if not collected:
                path.unlink(missing_ok=True)
            raise
        return pb.Ack(ok=True)

    def accept_validation(self, report: pb.ValidationReport, caller: Caller) -> pb.Ack:
        found = self._open_task(report.task_id, caller, pb.VALIDATE)
        if isinstance(found, pb.Ack):
            return found
        state, outcome = found
        metrics = dict(report.metrics)
        problem = metrics_problem(metrics)
        if problem:
            self.metrics.refused(RejectReason.METRICS)
            state.resolve(report.task_id, OutcomeStatus.REJECTED, problem)
            return pb.Ack(ok=False, message=problem)
        if not receipt_verifies(
            state.spec, self.combiner_id, outcome.client_id, 0, metrics, report.receipt
        ):
            return self._refuse(state, report.task_id, REPORT_RECEIPT_FAILS)
        state.resolve(report.task_id, OutcomeStatus.OK, metrics=metrics, receipt=report.receipt)
        return pb.Ack(ok=True)

    def _refuse(self, state: RoundState, task_id: str, reason: str) -> pb.Ack:
        """Reject a task's answer whose receipt fails: the round goes on without it."""
        self.metrics.refused(RejectReason.RECEIPT)
        state.resolve(task_id, OutcomeStatus.REJECTED, reason)
        return pb.Ack(ok=False, message=reason)

    def accept_failure(self, failure: pb.TaskFailure, caller: Caller) -> pb.Ack:
        found = self._open_task(failure.task_id, caller, None)
        if isinstance(found, pb.Ack):
            return found
        state, _ = found
        if failure.task_id in state.arriving:  # its update decides the outcome
            return pb.Ack(ok=False, message="an update for this task is arriving")
        state.resolve(failure.task_id, OutcomeStatus.FAILED, failure.reason[:2000])
        return pb.Ack(ok=True)

    def _open_task(
        self, task_id: str, caller: Caller, kind: pb.TaskKind | None
    ) -> tuple[RoundState, Outcome] | pb.Ack:
        """The open task ``task_id`` if ``caller`` was sent it and it is of ``kind``."""
        state = self._tasks.get(task_id)
        if state is None or not state.is_pending(task_id):
            return pb.Ack(ok=False, message=f"task {task_id[:64]!r} is not open (late or unknown)")
        outcome = state.outcome(task_id)
        if outcome.client_id != caller.client_id:
            return pb.Ack(ok=False, message="this task was sent to another client")
        if kind is not None and state.spec.kind != kind:
            wanted = "an update" if state.spec.kind == pb.TRAIN else "a validation report"
            return pb.Ack(ok=False, message=f"this task asks for {wanted}")
        return state, outcome

    def busy_clients(self) -> set[str]:
        """Clients with a task in flight: never moved elsewhere until they answer it."""
        return {
            outcome.client_id
            for state in set(self._tasks.values())
            for task_id, outcome in state.outcomes.items()
            if state.is_pending(task_id)
        }

    def client_left(self, client_id: str) -> None:
        """A client's task stream ended: its open tasks are dropped at once, not timed out."""
        for state in set(self._tasks.values()):
            state.resolve_client(client_id, OutcomeStatus.DROPPED, "client disconnected")


async def _finish(work: Awaitable[None]) -> bool:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; True if it was.

    A fold in a worker thread cannot be stopped half-way: whoever holds the collect lock
    must neither let go of it nor leave the update uncounted while the thread still folds,
    so the caller records the outcome first and re-raises the cancellation after.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        task.result()  # the fold's own error, if it failed
        return True
    return False
