"""The client runtime: ask the controller for a combiner, open a task stream, do the tasks.

The client dials out only (no open port). When its combiner goes away, it asks the
controller again, naming the combiner that failed, and reconnects by itself. When the
controller moves it to even the load (its stream ends with ABORTED), it asks again
without naming a failure.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from stratafl.aggregate.server_state import model_part
from stratafl.client.app import ClientApp
from stratafl.client.drift import drift_corrected_app
from stratafl.client.feedback import load_feedback, save_feedback
from stratafl.client.scaffold import ClientControl
from stratafl.compression import (
    Codec,
    encode_update,
    parse_compression,
    parse_partial_updates,
    partial_of,
)
from stratafl.errors import ConfigError, StrataError, UnavailableError
from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.restapi import Assignment, ControllerClient
from stratafl.transport.backoff import Backoff
from stratafl.transport.channels import open_channel
from stratafl.transport.credentials import INSECURE, PeerCredentials
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_params,
    send_model,
)

log = logging.getLogger("stratafl.client")

BACKOFF_BASE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
"""Reconnect waits: uniform in [0, min(5 s, 0.2 s * 2**failures)] (full jitter)."""
STREAM_OPEN_KEY = "strata-stream-open"
"""The initial metadata a combiner sends once it accepted a task stream."""


class ClientRuntime:
    """Runs one client until ``stop()``; safe to run several in threads of one process."""

    def __init__(
        self,
        client_id: str,
        controller_url: str,
        app: ClientApp,
        *,
        credentials: PeerCredentials = INSECURE,
        rng: random.Random | None = None,
        preferred_combiner: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.client_id = client_id
        self._workdir = workdir
        self.feedback = load_feedback(workdir)
        """Top-k's residuals: what earlier updates did not send (kept in ``workdir``)."""
        self.control = ClientControl(workdir)
        """The client's drift-correction state: SCAFFOLD's c_i or FedDyn's g_i (kept in
        ``workdir``)."""
        self.preferred_combiner = preferred_combiner
        """The combiner this client asks for at every assignment (a placement); the
        controller honours it while that combiner is online and has room."""
        self._controller_url = controller_url.rstrip("/")
        self._app = app
        self._credentials = credentials
        self._stopped = threading.Event()
        self._call: grpc.Future | None = None
        self._model_cache: tuple[str, Params] | None = None
        self.backoff = Backoff(
            BACKOFF_BASE_SECONDS, MAX_BACKOFF_SECONDS, rng=rng or random.Random()
        )
        """The waits between reconnect attempts; reset whenever a task stream opens."""
        self.moves = 0
        """Times the controller moved this client to even the load."""

    def stop(self) -> None:
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()

    def assign(self, failed_combiner: str | None) -> Assignment:
        """The combiner to connect to; UnavailableError (retried by `run`) if there is none.

        One REST client per call: assignments are rare (start-up, a combiner gone), and a
        short-lived client leaves no pooled connection behind when the runtime stops.
        """
        try:
            with ControllerClient(
                self._controller_url,
                timeout=10,
                token=self._credentials.token,
                verify=self._credentials.http_verify(),
            ) as controller:
                return controller.assign(
                    self.client_id, failed_combiner, preferred_combiner=self.preferred_combiner
                )
        except (UnavailableError, ConfigError):  # a bad URL or client id: no retry helps
            raise
        except StrataError as exc:  # a refusal is retried too: the controller may recover
            raise UnavailableError(f"the controller refused an assignment: {exc}") from exc

    def run(self) -> None:
        """Serve tasks until stopped, reconnecting whenever the combiner goes away.

        Every wait between attempts is jittered (`Backoff`), so the clients of a combiner
        that died do not all come back at the same instant; the backoff starts short again
        once a task stream is open.
        """
        failed: str | None = None
        backoff = self.backoff
        while not self._stopped.is_set():
            try:
                assignment = self.assign(failed)
            except UnavailableError as exc:
                log.warning("%s: %s", self.client_id, exc)
                self._stopped.wait(backoff.next_delay())
                continue
            failed = None
            try:
                self._serve(assignment, on_open=backoff.reset)
                log.info("%s: %s ended the stream", self.client_id, assignment.combiner_id)
            except grpc.RpcError as exc:
                if self._stopped.is_set():
                    break
                code = exc.code() if isinstance(exc, grpc.Call) else None
                if code == grpc.StatusCode.ABORTED:  # the controller evens the load
                    self.moves += 1
                    log.info("%s: moved off %s", self.client_id, assignment.combiner_id)
                else:
                    log.info(
                        "%s: stream to %s ended (%s); asking for a combiner",
                        self.client_id,
                        assignment.combiner_id,
                        code,
                    )
                if code == grpc.StatusCode.UNAVAILABLE:  # gone, not merely full
                    failed = assignment.combiner_id
            self._stopped.wait(backoff.next_delay())

    def _serve(self, assignment: Assignment, on_open: Callable[[], None]) -> None:
        """Do the tasks of ``assignment``'s stream until it ends; ``on_open`` runs once the
        combiner has accepted the stream (its initial metadata arrived)."""
        credentials = self._credentials.channel_credentials()
        with open_channel(assignment.address, credentials=credentials) as channel:
            stub = pb_grpc.CombinerStub(channel)
            call = stub.TaskStream(pb.ClientHello(client_id=self.client_id))
            self._call = call
            if self._stopped.is_set():
                call.cancel()
            if any(key == STREAM_OPEN_KEY for key, _ in call.initial_metadata() or ()):
                on_open()
            for task in call:
                self._handle(stub, task)

    def _handle(self, stub: pb_grpc.CombinerStub, task: pb.Task) -> None:
        try:
            params = self._download(stub, task)
            config = json.loads(task.config_json or "{}")
            if task.kind == pb.TRAIN:
                started = time.monotonic()
                app = drift_corrected_app(self._app, self.control, config, task.session_id)
                result = app.train(params, config)
                compression = parse_compression(task.compression or "none")
                feedback = self.feedback.for_session(task.session_id)
                trained, base = partial_of(  # the tensors sent this round (all by default)
                    result.params,
                    params,
                    parse_partial_updates(task.partial_updates),
                    seed=int(config.get("seed", task.round)),
                    client_id=self.client_id,
                )
                encoded = encode_update(trained, base, compression, feedback)
                if compression.codec == Codec.TOPK:
                    save_feedback(self._workdir, feedback)
                ack = stub.UploadUpdate(
                    _update_messages(
                        task,
                        self.client_id,
                        encoded,
                        result.num_examples,
                        dict(result.metrics),
                        time.monotonic() - started,
                        str(compression),
                    )
                )
                if not ack.ok:
                    log.warning("%s: update refused: %s", self.client_id, ack.message)
            elif task.kind == pb.VALIDATE:
                scored = self._app.validate(model_part(params), config)
                metrics = {k: float(v) for k, v in scored.items()}
                stub.ReportValidation(
                    pb.ValidationReport(
                        task_id=task.task_id, client_id=self.client_id, metrics=metrics
                    )
                )
        except grpc.RpcError:
            raise
        except Exception as exc:  # user code failed: tell the combiner instead of vanishing
            log.exception("%s: task %s failed", self.client_id, task.task_id)
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            stub.ReportFailure(
                pb.TaskFailure(task_id=task.task_id, client_id=self.client_id, reason=reason)
            )

    def _download(self, stub: pb_grpc.CombinerStub, task: pb.Task) -> Params:
        if self._model_cache is not None and self._model_cache[0] == task.model_id:
            return self._model_cache[1]
        messages = stub.DownloadModel(pb.ModelRequest(model_id=task.model_id, task_id=task.task_id))
        _, params, _ = receive_params(messages, f"model {task.model_id} from the combiner")
        self._model_cache = (task.model_id, params)
        return params


def _update_messages(
    task: pb.Task,
    client_id: str,
    params: Params,
    num_examples: int,
    metrics: dict[str, float],
    seconds: float,
    codec: str,
) -> Iterator[pb.UpdateChunk]:
    header = pb.UpdateHeader(
        task_id=task.task_id,
        client_id=client_id,
        num_examples=int(num_examples),
        metrics={k: float(v) for k, v in metrics.items()},
        model=header_to_proto(task.model_id, specs_of(params)),
        compute_seconds=seconds,
        codec=codec,
    )
    return send_model(pb.UpdateChunk, header, params_chunks(params))
