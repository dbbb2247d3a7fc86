"""The client's side of the combiner protocol, once, for asyncio.

Both clients drive it: the client runtime (`stratafl.client.runtime`, one client on an
event loop of its own) and the swarm (`stratafl.swarm`, thousands of clients on one event
loop per process). A client asks the controller for a combiner (``POST /assign``), opens
its own channel and task stream, and does each task the stream pushes:

- TRAIN: download the model (or take it from the shelf), train with the session's drift
  correction, cut the update to the tensors this round's partial-update draw sends, encode
  it with the session's codec (top-k keeps what it did not send), upload it;
- VALIDATE: score the model without its server state (`model_part`), report the metrics;
- every update and report carries the client's receipt (`stratafl.security.receipts`),
  signed with the key of its assignment over the round, its combiner and what it reports:
  the controller counts nothing its combiner relays without one;
- an app that raises: report the failure to the combiner instead of vanishing.

The controller's answer carries a ticket: a short token only that combiner accepts, which
every call to it carries. Halfway through the ticket's life the client asks ``/assign``
again for the same combiner and uses the new ticket (if the controller names another
combiner, the client leaves for it); halfway through its own token's life it exchanges
that for a fresh copy (``POST /tokens/renew``), written back to its token file.

A refusal no retry can mend ends `run` with its error (`FINAL_ERRORS`): a setting to fix
(a CA that does not verify the controller, the wrong URL scheme), a token that is revoked,
expired, forged or of another role. What may pass is retried: a controller that is down
or restarting (refused, reset, timed out, 503), rate limits, other failures it answers.

A site may accept only some combiners (`ClientState.accepted_combiners`): a combiner sees
its clients' updates. The client then asks for one of them, and an assignment to any
other is refused before it connects: it asks again, for the next one it accepts, after
a backoff.

When the stream ends the client asks again after a jittered backoff (`Backoff`): ABORTED
means the controller moved it to even the load; UNAVAILABLE means the combiner is gone,
and the next assignment names it as failed. The user's ``train`` and ``validate`` are
synchronous code: they run in a worker thread, so the stream keeps its keepalives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping

import grpc
import grpc.aio

from stratafl.aggregate.server_state import model_part
from stratafl.client.app import TrainResult
from stratafl.client.assigner import ControllerAssigner
from stratafl.client.counters import ClientCounters, TaskDone
from stratafl.client.models import ModelShelf
from stratafl.client.packages import AppRefused
from stratafl.client.state import ClientState
from stratafl.client.task_settings import TaskSettings
from stratafl.compression import Codec, encode_update, partial_of
from stratafl.errors import AuthError, ConfigError, PermissionDenied, StrataError
from stratafl.params import Params
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.restapi.schema import Assignment
from stratafl.security import TokenVerifier
from stratafl.security.grants import GrantVerifier
from stratafl.security.receipts import Statement, decode_key, make_receipt
from stratafl.security.renewal import keep_renewed_token, renewal_due, seconds_to_renewal
from stratafl.transport.channels import open_aio_channel
from stratafl.transport.streams import receive_download
from stratafl.transport.task_stream import (
    Metadata,
    bearer_metadata,
    stream_opened,
    task_failure,
    update_messages,
    validation_report,
)

__all__ = ["FINAL_ERRORS", "ClientProtocol"]

log = logging.getLogger("stratafl.client")

Sleep = Callable[[float], Awaitable[None]]
StreamOpened = Callable[[ClientState, Assignment], None]

FINAL_ERRORS: tuple[type[StrataError], ...] = (ConfigError, AuthError, PermissionDenied)
"""The controller's answers that no retry changes: the client stops with the reason."""


class ClientProtocol:
    """What the clients of one process share to speak the protocol: the assigner, the TLS
    credentials, the model shelf, the counters and a bound on simultaneous connects.
    `run` serves one client (a `ClientState`) until its task is cancelled."""

    def __init__(
        self,
        assigner: ControllerAssigner,
        *,
        channel_credentials: grpc.ChannelCredentials | None,
        shelf: ModelShelf,
        counters: ClientCounters,
        connecting: asyncio.Semaphore,
        sleep: Sleep = asyncio.sleep,
        final_errors: tuple[type[StrataError], ...] = FINAL_ERRORS,
        on_task: Callable[[TaskDone], None] | None = None,
        on_stream_open: StreamOpened | None = None,
    ) -> None:
        self.assigner = assigner
        self.channel_credentials = channel_credentials
        """TLS without the token: each call carries its own client's token."""
        self.shelf = shelf
        self.counters = counters
        self.connecting = connecting
        """Clients asking for a combiner and opening a stream at the same time."""
        self._sleep = sleep
        self.final_errors = final_errors
        """The errors that end `run` instead of a retry (`FINAL_ERRORS` by default)."""
        self.on_task = on_task
        """Told of every task answered (a client runtime logs a line and counts it; a
        swarm of thousands does not)."""
        self.token_verifier: TokenVerifier | None = None
        """Checks the controller's tokens (an admin's, at this client's ``/metrics``); None
        until the key is known, as ``_grants``."""
        self._on_stream_open = on_stream_open
        """Told each time a combiner accepts a task stream (the runtime's ready file)."""
        self._grants: GrantVerifier | None = None
        """Checks each task's round grant; None until a secured client first has a
        combiner (it asks the controller for the key then), and on an insecure link."""

    async def run(self, client: ClientState) -> None:
        """Ask for a combiner, serve its task stream, and again whenever it ends; one of
        `final_errors` (no retry helps) ends it."""
        counters, failed = self.counters, None
        while True:
            try:
                await self.renew_token(client)
                assignment = await self.assign(client, failed)
            except StrataError as exc:  # unreachable or refused: the controller may recover
                counters.assign_errors += 1
                if isinstance(exc, self.final_errors):
                    raise
                level = logging.INFO if client.backoff.failures == 0 else logging.DEBUG
                log.log(level, "%s: no combiner: %s", client.client_id, exc)
                await self._sleep(client.backoff.next_delay())
                continue
            failed = None
            if not client.accepts(assignment.combiner_id):
                counters.assign_errors += 1
                level = logging.INFO if client.backoff.failures == 0 else logging.DEBUG
                client.prefer_next_accepted()
                log.log(
                    level,
                    "%s: assigned to %s, which this site does not accept (combiners: %s); "
                    "asking for %s",
                    client.client_id,
                    assignment.combiner_id,
                    ", ".join(client.accepted_combiners),
                    client.preferred_combiner,
                )
                await self._sleep(client.backoff.next_delay())
                continue
            try:
                await self.serve(client, assignment)
                log.info("%s: %s ended the stream", client.client_id, assignment.combiner_id)
            except grpc.aio.AioRpcError as exc:
                counters.stream_errors += 1
                if exc.code() == grpc.StatusCode.ABORTED:  # the controller evens the load
                    counters.moves += 1
                elif exc.code() == grpc.StatusCode.UNAVAILABLE:  # gone, not merely full
                    failed = assignment.combiner_id
                log.info(
                    "%s: stream to %s ended (%s: %s)",
                    client.client_id,
                    assignment.combiner_id,
                    exc.code().name,
                    exc.details(),
                )
            await self._sleep(client.backoff.next_delay())

    async def assign(
        self, client: ClientState, failed_combiner: str | None, *, current: str | None = None
    ) -> Assignment:
        """The combiner ``client`` should connect to, avoiding ``failed_combiner``; with
        ``current`` (a ticket's renewal) the one it is connected to, while it still is."""
        async with self.connecting:
            assignment = await self.assigner.assign(
                client.client_id,
                client.token,
                failed_combiner=failed_combiner,
                preferred_combiner=client.preferred_combiner,
                current_combiner=current,
            )
            if self.channel_credentials is not None and self._grants is None:
                key = await self.assigner.token_key(client.token)
                self._grants = GrantVerifier(key) if key else None
                self.token_verifier = TokenVerifier(key) if key else None
            return assignment

    async def renew_token(self, client: ClientState) -> None:
        """Exchange the client's token for a fresh copy once it is past half its life, and
        write it back to its file; a passing failure leaves the old one (still valid) in
        use, a final one (`final_errors`) is raised."""
        if client.token is None or not renewal_due(client.token):
            return
        try:
            token = await self.assigner.renew(client.token)
        except self.final_errors:  # revoked or expired: the assignment would fail alike
            raise
        except StrataError as exc:
            log.warning("%s: cannot renew its token yet: %s", client.client_id, exc)
            return
        client.token = token
        if client.token_file is not None:
            await asyncio.to_thread(keep_renewed_token, client.token_file, token)
        log.info("%s: renewed its token", client.client_id)

    async def serve(self, client: ClientState, assignment: Assignment) -> None:
        """Do the tasks of ``assignment``'s stream until it ends (or the controller sends the
        client elsewhere when it renews the ticket), on a channel of the client's own; the
        client's backoff resets once the combiner accepted the stream."""
        client.ticket = assignment.ticket or None
        channel = open_aio_channel(assignment.address, credentials=self.channel_credentials)
        async with channel:
            stub = pb_grpc.CombinerStub(channel)
            call = stub.TaskStream(
                pb.ClientHello(client_id=client.client_id), metadata=_combiner_metadata(client)
            )
            async with self.connecting:  # the TLS handshake is the costly part of a connect
                opened = stream_opened(await call.initial_metadata())
            client.receipt_key = decode_key(assignment.receipt_key)
            if opened:
                client.backoff.reset()
                self.counters.streams_opened += 1
                self.counters.connected += 1
                if self._on_stream_open is not None:
                    self._on_stream_open(client, assignment)
            reading = asyncio.ensure_future(self._tasks(client, stub, call, assignment.combiner_id))
            renewing = asyncio.ensure_future(self._keep_ticket(client, assignment))
            try:
                await asyncio.wait((reading, renewing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reading, renewing):
                    task.cancel()
                call.cancel()
                await asyncio.gather(reading, renewing, return_exceptions=True)
                if opened:
                    self.counters.connected -= 1
            for task in (reading, renewing):
                error = None if task.cancelled() else task.exception()
                if error is not None:
                    raise error

    async def _tasks(
        self,
        client: ClientState,
        stub: pb_grpc.CombinerStub,
        call: grpc.aio.UnaryStreamCall,
        combiner_id: str,
    ) -> None:
        async for task in call:
            await self._handle(client, stub, task, combiner_id)

    async def _keep_ticket(self, client: ClientState, assignment: Assignment) -> None:
        """Renew the ticket halfway through its life by asking ``/assign`` for the same
        combiner; returns when the controller names another one (the client moves)."""
        if not assignment.ticket:  # an insecure federation: nothing expires
            await asyncio.Future()
        while True:
            assert client.ticket is not None
            await asyncio.sleep(seconds_to_renewal(client.ticket))
            await self.renew_token(client)
            try:
                fresh = await self.assign(client, None, current=assignment.combiner_id)
            except self.final_errors:
                raise
            except StrataError as exc:  # the rest of the ticket's life rides it out
                log.warning("%s: cannot renew its ticket yet: %s", client.client_id, exc)
                await asyncio.sleep(client.backoff.next_delay())  # a swarm must not pound it
                continue
            if fresh.combiner_id != assignment.combiner_id:
                log.info("%s: the controller moves it to %s", client.client_id, fresh.combiner_id)
                return
            client.ticket = fresh.ticket

    async def _handle(
        self, client: ClientState, stub: pb_grpc.CombinerStub, task: pb.Task, combiner_id: str
    ) -> None:
        counters = self.counters  # each call reads the ticket anew: it is renewed meanwhile
        counters.tasks += 1
        refusal = self._ungranted(task, combiner_id)
        if refusal:  # a combiner acting outside the controller's rounds: do nothing for it
            counters.ungranted += 1
            log.warning("%s: task %s refused: %s", client.client_id, task.task_id, refusal)
            failure = task_failure(task, client.client_id, f"task refused: {refusal}")
            await stub.ReportFailure(failure, metadata=_combiner_metadata(client))
            return
        arrived = time.monotonic()
        try:
            settings = TaskSettings.of(task)
            params = await self._download(client, stub, task)
            if task.kind == pb.TRAIN:
                started = time.monotonic()
                result, encoded = await asyncio.to_thread(
                    _train, client, settings, params, task.session_id
                )
                num_examples = int(result.num_examples)
                trained = {k: float(v) for k, v in result.metrics.items()}
                messages = update_messages(
                    task,
                    client.client_id,
                    encoded,
                    num_examples=num_examples,
                    metrics=trained,
                    seconds=time.monotonic() - started,
                    codec=str(settings.compression),
                    receipt=_receipt(client, task, combiner_id, num_examples, trained),
                )
                ack = await stub.UploadUpdate(messages, metadata=_combiner_metadata(client))
                if ack.ok:
                    counters.updates_accepted += 1
                else:
                    counters.updates_refused += 1
                    log.warning("%s: update refused: %s", client.client_id, ack.message)
                self._done(task, "train", num_examples, arrived, trained)
            elif task.kind == pb.VALIDATE:
                scored = await asyncio.to_thread(_validate, client, settings, params)
                metrics = {k: float(v) for k, v in scored.items()}
                receipt = _receipt(client, task, combiner_id, 0, metrics)
                report = validation_report(task, client.client_id, metrics, receipt)
                await stub.ReportValidation(report, metadata=_combiner_metadata(client))
                counters.validations += 1
                self._done(task, "validate", 0, arrived, metrics)
        except grpc.RpcError:
            raise
        except AppRefused as exc:  # the session's app package: not for this site
            counters.app_failures += 1
            log.warning("%s: task %s refused: %s", client.client_id, task.task_id, exc)
            failure = task_failure(task, client.client_id, str(exc))
            await stub.ReportFailure(failure, metadata=_combiner_metadata(client))
        except Exception as exc:  # user code failed: tell the combiner instead of vanishing
            counters.app_failures += 1
            log.warning("%s: task %s failed: %s", client.client_id, task.task_id, exc)
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            failure = task_failure(task, client.client_id, reason)
            await stub.ReportFailure(failure, metadata=_combiner_metadata(client))

    def _done(
        self, task: pb.Task, kind: str, examples: int, arrived: float, metrics: dict[str, float]
    ) -> None:
        if self.on_task is not None:
            seconds = time.monotonic() - arrived
            self.on_task(TaskDone(task.session_id, task.round, kind, examples, seconds, metrics))

    def _ungranted(self, task: pb.Task, combiner_id: str) -> str:
        """Why ``task`` is not one of the controller's rounds on ``combiner_id`` (empty: it
        is, or this client runs without grants, on an insecure link)."""
        if self._grants is None:
            return ""
        try:
            grant = self._grants.verify(task.grant, combiner_id)
        except AuthError as exc:
            return str(exc)
        granted = (grant.session_id, grant.round, grant.round_id, grant.kind, grant.model_id)
        if granted != (task.session_id, task.round, task.round_id, task.kind, task.model_id):
            return "the task is not the round its grant names"
        return ""

    async def _download(
        self, client: ClientState, stub: pb_grpc.CombinerStub, task: pb.Task
    ) -> Params:
        """The task's model: downloaded by this client, unless it is the one it downloaded
        last and the shelf still holds it."""
        if client.last_model == task.model_id:
            shelved = self.shelf.get(task.model_id)
            if shelved is not None:
                return shelved
        messages = stub.DownloadModel(
            pb.ModelRequest(model_id=task.model_id, task_id=task.task_id),
            metadata=_combiner_metadata(client),
        )
        params = await receive_download(messages, f"model {task.model_id} from the combiner")
        self.shelf.put(task.model_id, params)
        client.last_model = task.model_id
        return params


def _receipt(
    client: ClientState,
    task: pb.Task,
    combiner_id: str,
    num_examples: int,
    metrics: dict[str, float],
) -> bytes:
    """The client's receipt for what it reports on ``task`` (empty without a key: the
    controller will not count it, and says why)."""
    if client.receipt_key is None:
        return b""
    kind = "train" if task.kind == pb.TRAIN else "validate"
    statement = Statement(task.round_id, kind, client.client_id, combiner_id, num_examples, metrics)
    return make_receipt(client.receipt_key, statement)


def _combiner_metadata(client: ClientState) -> Metadata | None:
    """What a call to the client's combiner carries: its ticket (its token when the
    controller gave none, as an ``--insecure`` one does)."""
    return bearer_metadata(client.ticket or client.token)


def _validate(client: ClientState, settings: TaskSettings, params: Params) -> Mapping[str, float]:
    """Score the model's part the app sees (user code, in a worker thread)."""
    return client.app_of(settings).validate(model_part(params), settings.config)


def _train(
    client: ClientState, settings: TaskSettings, params: Params, session_id: str
) -> tuple[TrainResult, Params]:
    """Train (user code, in a worker thread) and encode the update as the session sends
    it: the tensors of this round's draw, in the session's codec; top-k's residuals kept."""
    result = client.app_for(settings, session_id).train(params, settings.config)
    trained, base = partial_of(
        result.params, params, settings.partial, seed=settings.seed, client_id=client.client_id
    )
    topk = settings.compression.codec == Codec.TOPK
    feedback = client.feedback_for(session_id) if topk else None
    encoded = encode_update(trained, base, settings.compression, feedback)
    if topk:
        client.keep_feedback()
    return result, encoded
