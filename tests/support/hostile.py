"""An attacker's toolkit for the hostile-peer tests: a process that holds some credentials
(none, a stolen or forged token, a token of the wrong role, its own client token) and
speaks gRPC and REST to a running `LocalFederation` the way a hostile peer would.

- `Attacker` opens TLS channels to the controller and the combiners with any token (or
  none), forges tokens with a key of its own, and, with the federation's signing key that
  a test can read from the controller's work folder, makes tokens that expired long ago;
- `HostileClient` holds a task stream open under a client token and answers each task it
  is sent with whatever its test scripts (a report of the wrong kind, NaN metrics, model
  downloads it never reads, ...), keeping every `Ack` it gets back;
- `start_combiner` and `start_clients` start tiers with options the launcher does not
  expose (e.g. a combiner's transfer limits), the way `LocalFederation` starts its own;
- `RogueCombiner` is a combiner enrolled with a genuine token whose heartbeats, status and
  round answers are all made up (invented clients, counts, scores and partial);
- `fedavg_shift` is the model the honest test clients give (tests/support/federation_apps.py).

Nothing here patches stratafl: every attack goes over real sockets to real processes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from stratafl.client.main import ClientOptions
from stratafl.combiner.main import CombinerOptions
from stratafl.errors import RoundFailed
from stratafl.launch.federation import LocalFederation
from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.records import RoundRecord, SessionRecord
from stratafl.restapi import ControllerClient
from stratafl.restapi.schema import Assignment, IssuedRole
from stratafl.security import Role, TokenSigner, certificate_request
from stratafl.security.receipts import Statement, decode_key, make_receipt
from stratafl.settings import SessionConfig
from stratafl.status import RoundStatus, SessionStatus
from stratafl.transport.channels import open_channel
from stratafl.transport.credentials import PeerCredentials
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_params,
    send_model,
)
from stratafl.transport.task_stream import STREAM_OPEN_KEY

NO_TOKEN = None
"""A TLS channel that trusts the federation's CA but sends no token."""

OK = grpc.StatusCode.OK


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """The status a blocking unary call ends with (`OK` when it returns)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return OK


def drain(stream: Iterable[object]) -> tuple[list[object], grpc.StatusCode]:
    """Every message of a response stream, and the status it ended with."""
    received: list[object] = []
    try:
        for message in stream:
            received.append(message)
    except grpc.RpcError as exc:
        return received, exc.code()
    return received, OK


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def fedavg_shift(clients: Sequence[int], rounds: int = 1) -> float:
    """Every weight of the model the test app's clients ``clients`` give from zeros: client
    i adds i+1 and reports 10*(i+1) examples, so each round adds the weighted mean shift."""
    examples = [10 * (i + 1) for i in clients]
    shift = sum(n * (i + 1) for n, i in zip(examples, clients, strict=True)) / sum(examples)
    return rounds * shift


def run_session_strictly(
    fed: LocalFederation, config: SessionConfig, poll_seconds: float = 0.1
) -> tuple[SessionRecord, list[RoundRecord]]:
    """Run a session to its end, or until its first failed round: then cancel it (a session
    runs a failed round again, so an attack that fails rounds would otherwise only slow
    it down). Returns the session and its rounds."""
    session = fed.client.start_session(config)
    while True:
        session = fed.client.session(session.id)
        rounds = fed.client.rounds(session.id)
        if session.status != SessionStatus.RUNNING:
            return session, rounds
        if any(r.status != RoundStatus.FINISHED for r in rounds):
            with suppress(RoundFailed):  # it ended by itself meanwhile: "nothing to stop"
                fed.client.cancel_session(session.id)
            return fed.client.session(session.id), fed.client.rounds(session.id)
        time.sleep(poll_seconds)


def combiner_address(fed: LocalFederation, combiner_id: str) -> str:
    return next(c.address for c in fed.client.combiners() if c.id == combiner_id)


# -- credentials and channels -------------------------------------------------------------


@dataclass
class Attacker:
    """Channels to a federation's tiers under any credentials; `close()` closes them all."""

    fed: LocalFederation
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def ca_pem(self) -> bytes:
        assert self.fed.ca_file is not None, "a secured federation has a CA"
        return self.fed.ca_file.read_bytes()

    def token(
        self,
        subject: str,
        role: IssuedRole,
        *,
        max_examples: int | None = None,
        hosts: tuple[str, ...] = (),
    ) -> str:
        """A genuine token, issued by the federation's admin."""
        issued = self.fed.client.create_token(subject, role, max_examples=max_examples, hosts=hosts)
        return issued.token

    def assigned(self, token: str, preferred_combiner: str | None = None) -> Assignment:
        """What ``/assign`` answers the client of ``token`` (asking for
        ``preferred_combiner``, if given): its combiner and its ticket there (the only
        token that combiner accepts from it)."""
        with self.rest(token) as rest:
            assignment = rest.assign(preferred_combiner=preferred_combiner)
        assert assignment.ticket, "a secured controller hands out a ticket"
        return assignment

    def forged_token(self, subject: str, role: Role) -> str:
        """A well-formed token for any identity and role, signed with the attacker's key."""
        token, _ = TokenSigner.generate().issue(subject, role, 3600)
        return token

    def expired_token(self, subject: str, role: Role, *, ago: float = 3600.0) -> str:
        """A token the federation really signed, which expired ``ago`` seconds ago (past
        the verifiers' few seconds of leeway). Signed with the controller's key, read from
        its folder."""
        key = self.fed.workdir / "controller" / "trust" / "token-signing.key"
        assert key.exists(), f"no token-signing key at {key}"
        signer = TokenSigner.load_or_create(key)
        token, _ = signer.issue(subject, role, 60, now=time.time() - 60 - ago)
        return token

    def credentials(self, token: str | None) -> grpc.ChannelCredentials:
        """TLS with the federation's CA, plus ``token`` on every call (none for NO_TOKEN)."""
        if token is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        secured = PeerCredentials(token=token, ca_pem=self.ca_pem).channel_credentials()
        assert secured is not None
        return secured

    def channel(self, address: str, token: str | None) -> grpc.Channel:
        channel = open_channel(address, credentials=self.credentials(token))
        self._channels.append(channel)
        return channel

    def plaintext_channel(self, address: str) -> grpc.Channel:
        """No TLS at all: what a process that ignores the federation's CA would open."""
        channel = open_channel(address)
        self._channels.append(channel)
        return channel

    def controller(self, token: str | None) -> pb_grpc.ControllerStub:
        return pb_grpc.ControllerStub(self.channel(self.fed.grpc_address, token))

    def combiner(self, address: str, token: str | None) -> pb_grpc.CombinerStub:
        return pb_grpc.CombinerStub(self.channel(address, token))

    def rest(self, token: str) -> ControllerClient:
        """The controller's REST API under ``token`` (close it after use)."""
        assert self.fed.ca_file is not None
        return ControllerClient(self.fed.url, token=token, verify=self.fed.ca_file, timeout=10)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a hostile client -------------------------------------------------------------------------

Respond = Callable[["HostileClient", pb.Task], None]
"""What a hostile client does with each task it is sent (called on its reader thread)."""


def shifted(size: int, shift: float) -> Params:
    """A well-formed update for the test app's model of ``size`` weights."""
    return {
        "w": np.full(size, shift, np.float32),
        "b": np.full(3, shift, np.float32),
    }


class HostileClient:
    """A client process's task stream under ``token``, answering tasks with ``respond``.

    ``hello_id`` is what it claims to be in its `ClientHello` (its token's subject unless a
    test says otherwise). With the ``assignment`` it got from ``/assign`` it signs receipts
    as an honest client does (the controller counts nothing without), for the combiner
    named ``combiner_id`` (default: the assigned one). Every ack it got and any error of
    its script are kept for the test to assert on; the `Attacker`'s `close()` ends its
    stream.
    """

    def __init__(
        self,
        attacker: Attacker,
        address: str,
        token: str,
        hello_id: str,
        respond: Respond | None = None,
        *,
        assignment: Assignment | None = None,
        combiner_id: str | None = None,
    ) -> None:
        self.address = address
        self.hello_id = hello_id
        self.receipt_key = decode_key(assignment.receipt_key) if assignment else None
        self.combiner_id = combiner_id or (assignment.combiner_id if assignment else "")
        self.stub = attacker.combiner(address, token)
        self.respond = respond
        self.acks: list[tuple[str, pb.Task, pb.Ack]] = []
        self.errors: list[BaseException] = []
        self.hogs: list[Any] = []
        self._call: Any = None
        self._thread: threading.Thread | None = None

    def connect(self) -> HostileClient:
        self._call = self.stub.TaskStream(pb.ClientHello(client_id=self.hello_id))
        self._thread = threading.Thread(target=self._read, name="hostile-client", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        try:
            for task in self._call:
                if self.respond is not None:
                    self.respond(self, task)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.errors.append(exc)
        except BaseException as exc:  # a broken script must fail the test, not vanish
            self.errors.append(exc)

    def stream_code(self, timeout: float = 10.0) -> grpc.StatusCode | None:
        """How the task stream ended (None if it is still open after ``timeout``)."""
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self.errors and isinstance(self.errors[0], grpc.RpcError):
            return self.errors[0].code()  # type: ignore[no-any-return]
        return OK

    # -- answers: each records the ack it got ------------------------------------------------

    def _ack(self, what: str, task: pb.Task, ack: pb.Ack) -> pb.Ack:
        self.acks.append((what, task, ack))
        return ack

    def receipt(self, task: pb.Task, num_examples: int, metrics: dict[str, float]) -> bytes:
        """Its receipt for what it reports on ``task`` (empty without an assignment)."""
        if self.receipt_key is None:
            return b""
        kind = "train" if task.kind == pb.TRAIN else "validate"
        said = Statement(
            task.round_id, kind, self.hello_id, self.combiner_id, num_examples, metrics
        )
        return make_receipt(self.receipt_key, said)

    def report_validation(self, task: pb.Task, metrics: dict[str, float]) -> pb.Ack:
        report = pb.ValidationReport(
            task_id=task.task_id,
            client_id=self.hello_id,
            metrics=metrics,
            receipt=self.receipt(task, 0, metrics),
        )
        return self._ack("validation", task, self.stub.ReportValidation(report, timeout=30))

    def report_failure(self, task: pb.Task, reason: str = "hostile client gives up") -> pb.Ack:
        failure = pb.TaskFailure(task_id=task.task_id, client_id=self.hello_id, reason=reason)
        return self._ack("failure", task, self.stub.ReportFailure(failure, timeout=30))

    def upload(self, task: pb.Task, params: Params, num_examples: int) -> pb.Ack:
        header = pb.UpdateHeader(
            task_id=task.task_id,
            client_id=self.hello_id,
            num_examples=num_examples,
            model=header_to_proto(task.model_id, specs_of(params)),
            receipt=self.receipt(task, num_examples, {}),
        )
        messages = send_model(pb.UpdateChunk, header, params_chunks(params))
        return self._ack("update", task, self.stub.UploadUpdate(messages, timeout=60))

    def download(self, task: pb.Task) -> Params:
        """The model of ``task``, as an honest client downloads it."""
        messages = self.stub.DownloadModel(
            pb.ModelRequest(model_id=task.model_id, task_id=task.task_id), timeout=60
        )
        return receive_params(messages, "the task's model")[1]

    def upload_and_cancel(
        self, task: pb.Task, params: Params, num_examples: int, delay: float
    ) -> grpc.StatusCode:
        """Send a whole update, then cancel the call ``delay`` s after its last message left:
        as the combiner starts collecting it. Returns how the call ended."""
        header = pb.UpdateHeader(
            task_id=task.task_id,
            client_id=self.hello_id,
            num_examples=num_examples,
            model=header_to_proto(task.model_id, specs_of(params)),
            receipt=self.receipt(task, num_examples, {}),
        )
        sent = threading.Event()

        def messages() -> Iterator[pb.UpdateChunk]:
            yield from send_model(pb.UpdateChunk, header, params_chunks(params))
            sent.set()

        call = self.stub.UploadUpdate.future(messages(), timeout=60)
        sent.wait(60)
        time.sleep(delay)
        call.cancel()
        try:
            self._ack("update", task, call.result())
        except grpc.FutureCancelledError:
            return grpc.StatusCode.CANCELLED
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return OK

    def hog_downloads(self, model_id: str, count: int, task_id: str = "") -> list[Any]:
        """Open ``count`` downloads of ``model_id`` (with ``task_id``, or none) and never read
        them: each one the combiner grants would hold one of its transfer slots for as long
        as it lets it. Returns the calls (also kept in ``hogs``)."""
        calls = [
            self.stub.DownloadModel(pb.ModelRequest(model_id=model_id, task_id=task_id))
            for _ in range(count)
        ]
        self.hogs.extend(calls)
        return calls


def ended_with(calls: Iterable[Any], code: grpc.StatusCode) -> int:
    """How many of ``calls`` have ended, with status ``code`` (never blocks: a call the
    combiner granted and then cut may never get a status; see `read_hog`)."""
    return sum(1 for call in calls if call.done() and call.code() == code)


def enrolled_client(
    attacker: Attacker, name: str, respond: Callable[[HostileClient, pb.Task], None]
) -> HostileClient:
    """A hostile client enrolled as any site is (a client token of its own, an assignment,
    a ticket for its combiner, receipts signed with its key), its task stream open."""
    assignment = attacker.assigned(attacker.token(name, Role.CLIENT))
    return HostileClient(
        attacker,
        assignment.address,
        assignment.ticket,
        name,
        respond,
        assignment=assignment,
    ).connect()


def read_hog(hog: Any, seconds: float) -> int:
    """Read what a hogged download still delivers within ``seconds``, then cancel it;
    returns the data bytes received. (A combiner that cuts a transfer by cancelling its
    handler may leave the call without a status: the reader would wait forever.)"""
    received = [0]

    def read() -> None:
        with suppress(grpc.RpcError):
            for message in hog:
                if message.WhichOneof("part") == "data":
                    received[0] += len(message.data)

    reader = threading.Thread(target=read, name="hog-reader", daemon=True)
    reader.start()
    reader.join(seconds)
    hog.cancel()
    reader.join(10)
    return received[0]


# -- a combiner of the attacker's own -----------------------------------------------------------


def enrolled_combiner_server(
    attacker: Attacker, combiner_id: str, servicer: pb_grpc.CombinerServicer
) -> tuple[str, Any, str]:
    """A combiner server the attacker runs, enrolled as any combiner is: a combiner token
    the admin issued for host 127.0.0.1, a certificate bought with it, ``servicer`` bound
    to a TLS port. Returns (token, server, address); the caller starts the server."""
    token = attacker.token(combiner_id, Role.COMBINER, hosts=("127.0.0.1",))
    csr, key = certificate_request(combiner_id, ["127.0.0.1"])
    with attacker.rest(token) as rest:
        signed = rest.request_certificate(csr, ["127.0.0.1"])
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_CombinerServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(key, signed.certificate_pem.encode())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    return token, server, f"127.0.0.1:{port}"


class TaskForgingCombiner(pb_grpc.CombinerServicer):
    """A combiner the attacker runs itself, enrolled and registered with a genuine combiner
    token: it pushes whatever tasks its test queues to each client that opens a stream,
    heartbeats so it stays online, and records the failures the clients report."""

    def __init__(self, attacker: Attacker, combiner_id: str) -> None:
        self.combiner_id = combiner_id
        self.tasks: list[pb.Task] = []
        self.failures: list[tuple[str, str, str]] = []
        """(client_id, task_id, reason) of every ReportFailure."""
        self.clients: list[str] = []
        self._stop = threading.Event()
        token, self._server, self.address = enrolled_combiner_server(attacker, combiner_id, self)
        self._controller = attacker.controller(token)
        self._heartbeats = threading.Thread(target=self._beat, name="rogue-beat", daemon=True)

    def start(self) -> TaskForgingCombiner:
        self._server.start()
        info = pb.CombinerInfo(combiner_id=self.combiner_id, address=self.address, max_clients=10)
        ack = self._controller.RegisterCombiner(info, timeout=30)
        assert ack.ok, ack.message
        self._heartbeats.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(0.5):
            beat = pb.CombinerHeartbeat(combiner_id=self.combiner_id, client_ids=self.clients)
            with suppress(grpc.RpcError):
                self._controller.Heartbeat(beat, timeout=5)

    def stop(self) -> None:
        self._stop.set()
        self._server.stop(grace=None)

    def TaskStream(self, request: pb.ClientHello, context: Any) -> Iterator[pb.Task]:  # noqa: N802
        context.send_initial_metadata(((STREAM_OPEN_KEY, self.combiner_id),))
        self.clients.append(request.client_id)
        yield from self.tasks
        self._stop.wait()

    def ReportFailure(self, request: pb.TaskFailure, context: Any) -> pb.Ack:  # noqa: N802
        self.failures.append((request.client_id, request.task_id, request.reason))
        return pb.Ack(ok=True)


# -- tiers the launcher does not configure ------------------------------------------------------


def start_combiner(fed: LocalFederation, name: str, **overrides: Any) -> str:
    """Start combiner ``name`` with `CombinerOptions` ``overrides`` (e.g. its transfer
    limits), as `LocalFederation` starts its own; returns its gRPC address."""
    options = CombinerOptions(
        controller=fed.url,
        combiner_id=name,
        workdir=fed.workdir / name,
        ready_file=fed.group.ready_file(name),
        token_file=fed.token_file(name, Role.COMBINER),
        ca_file=fed.ca_file,
    )
    ready = fed.group.start(name, replace(options, **overrides)).wait_ready()
    return str(json.loads(ready)["grpc_address"])


def start_clients(fed: LocalFederation, count: int) -> None:
    """Start honest clients client-0 .. client-<count-1> of the federation's app."""
    for index in range(count):
        name = f"client-{index}"
        fed.group.start(
            name,
            ClientOptions(
                controller=fed.url,
                app=fed.spec.app,
                partition_id=index,
                num_partitions=count,
                token_file=fed.token_file(name, Role.CLIENT),
                ca_file=fed.ca_file,
            ),
        )


def client_token(fed: LocalFederation, index: int) -> str:
    """The token the launcher handed to honest client ``index``."""
    return Path(fed.workdir / "tokens" / f"client-{index}.token").read_text().strip()


def script_errors(*clients: HostileClient) -> list[BaseException]:
    """What went wrong in the clients' scripts (an RPC error other than their stream's end,
    or a failed assertion); a test asserts this is empty."""
    return [error for client in clients for error in client.errors]


# -- a hostile combiner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Invented:
    """An outcome a hostile combiner makes up: a client, its examples and its scores."""

    client_id: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class RogueCombiner(pb_grpc.CombinerServicer):
    """A combiner enrolled normally (a genuine combiner token, a certificate from the
    controller) that lies in everything it says: its heartbeats list ``heartbeat_ids``,
    its status lists ``status_ids``, and every round it answers with the ``invented``
    outcomes (ok, a receipt of zeros), their example counts summed as its weight and a
    partial of ``partial_value`` everywhere. Served from this process (`start`, `stop`);
    ``specs`` is every RunRound it was asked."""

    def __init__(
        self,
        attacker: Attacker,
        combiner_id: str,
        *,
        model: Params,
        invented: Sequence[Invented],
        status_ids: Sequence[str],
        heartbeat_ids: Sequence[str],
        max_clients: int,
        partial_value: float = 66.0,
    ) -> None:
        self.attacker = attacker
        self.combiner_id = combiner_id
        self.partial = {k: np.full_like(v, partial_value) for k, v in model.items()}
        self.invented = list(invented)
        self.status_ids = list(status_ids)
        self.heartbeat_ids = list(heartbeat_ids)
        self.max_clients = max_clients
        self.specs: list[pb.RoundSpec] = []
        self.address = ""
        self.token = ""
        self._server: Any = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> RogueCombiner:
        self.token, self._server, self.address = enrolled_combiner_server(
            self.attacker, self.combiner_id, self
        )
        self._server.start()
        controller = self.attacker.controller(self.token)
        info = pb.CombinerInfo(
            combiner_id=self.combiner_id, address=self.address, max_clients=self.max_clients
        )
        assert controller.RegisterCombiner(info, timeout=30).ok
        self._beat = threading.Thread(target=self._heartbeats, args=(controller,), daemon=True)
        self._beat.start()
        return self

    def _heartbeats(self, controller: pb_grpc.ControllerStub) -> None:
        beat = pb.CombinerHeartbeat(combiner_id=self.combiner_id, client_ids=self.heartbeat_ids)
        while not self._stop.wait(0.5):
            with suppress(grpc.RpcError):
                controller.Heartbeat(beat, timeout=5)

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(10)
        if self._server is not None:
            self._server.stop(None)

    def GetStatus(self, request: pb.StatusRequest, context: Any) -> pb.CombinerStatus:  # noqa: N802
        return pb.CombinerStatus(combiner_id=self.combiner_id, client_ids=self.status_ids)

    def MoveClients(self, request: pb.MoveRequest, context: Any) -> pb.MoveReply:  # noqa: N802
        return pb.MoveReply()

    def RunRound(self, request: pb.RoundSpec, context: Any) -> Iterator[pb.RoundResultChunk]:  # noqa: N802
        self.specs.append(request)
        header = pb.RoundResultHeader(
            combiner_id=self.combiner_id,
            contributors=len(self.invented),
            total_weight=float(sum(i.num_examples for i in self.invented)),
        )
        for made_up in self.invented:
            header.outcomes.append(
                pb.ClientOutcome(
                    client_id=made_up.client_id,
                    status=pb.OUTCOME_OK,
                    num_examples=made_up.num_examples,
                    metrics=made_up.metrics,
                    receipt=bytes(64),
                )
            )
        if request.kind != pb.TRAIN:
            yield pb.RoundResultChunk(header=header)
            return
        header.model.CopyFrom(header_to_proto("", specs_of(self.partial)))
        yield from send_model(pb.RoundResultChunk, header, params_chunks(self.partial))
