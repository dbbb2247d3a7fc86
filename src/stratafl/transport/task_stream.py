"""The messages of a client's side of the combiner protocol, defined once.

Every client speaks them (`stratafl.client.protocol`, which the client runtime and the
swarm both drive), and the combiner announces an open task stream with `STREAM_OPEN_KEY`.
A client sends its token as call metadata (``authorization: Bearer``), the header
`TokenAuth` call credentials would put on the wire, without a credentials plugin per
channel; a token goes only over a TLS channel (`bearer_metadata` of None otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import header_to_proto, params_chunks, send_model

__all__ = [
    "MAX_FAILURE_REASON_CHARS",
    "STREAM_OPEN_KEY",
    "Metadata",
    "bearer_metadata",
    "stream_opened",
    "task_failure",
    "update_messages",
    "validation_report",
]

STREAM_OPEN_KEY = "strata-stream-open"
"""Initial metadata of an open task stream (its value: the combiner's id): the client
knows its stream is open, and resets its reconnect backoff, before any task arrives."""
MAX_FAILURE_REASON_CHARS = 2000
"""A failure's reason is a message and a short traceback, not a log file."""

Metadata = tuple[tuple[str, str], ...]


def bearer_metadata(token: str | None) -> Metadata | None:
    """The call metadata that carries ``token``; None for an insecure link."""
    return None if token is None else (("authorization", f"Bearer {token}"),)


def stream_opened(initial_metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a task stream's initial metadata says the combiner accepted it."""
    return any(key == STREAM_OPEN_KEY for key, _ in initial_metadata or ())


def update_messages(
    task: pb.Task,
    client_id: str,
    encoded: Params,
    *,
    num_examples: int,
    metrics: Mapping[str, float],
    seconds: float,
    codec: str,
    receipt: bytes = b"",
) -> Iterator[pb.UpdateChunk]:
    """The upload of one update: its header (task, example count, metrics, the layout of
    ``encoded``, the trained params under ``codec``, the client's receipt for the
    controller), then the encoded bytes in chunks."""
    header = pb.UpdateHeader(
        task_id=task.task_id,
        client_id=client_id,
        num_examples=int(num_examples),
        metrics={k: float(v) for k, v in metrics.items()},
        model=header_to_proto(task.model_id, specs_of(encoded)),
        compute_seconds=seconds,
        codec=codec,
        receipt=receipt,
    )
    return send_model(pb.UpdateChunk, header, params_chunks(encoded))


def validation_report(
    task: pb.Task, client_id: str, metrics: Mapping[str, float], receipt: bytes = b""
) -> pb.ValidationReport:
    """What a client scored the task's model at, and its receipt for the controller."""
    return pb.ValidationReport(
        task_id=task.task_id,
        client_id=client_id,
        metrics={k: float(v) for k, v in metrics.items()},
        receipt=receipt,
    )


def task_failure(task: pb.Task, client_id: str, reason: str) -> pb.TaskFailure:
    """Why a client could not do a task (its app raised), bounded in length."""
    return pb.TaskFailure(
        task_id=task.task_id, client_id=client_id, reason=reason[:MAX_FAILURE_REASON_CHARS]
    )
