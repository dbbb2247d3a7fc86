"""The client's side of the combiner protocol, for asyncio: the same messages as
`stratafl.client.runtime` sends and reads, built with the same stream functions.

A swarm client sends its token as call metadata (``authorization: Bearer``), the very
header `TokenAuth` call credentials put on the wire, without a credentials plugin per
channel; a token goes only over a TLS channel (`bearer_metadata` of None otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterator, Mapping

from stratafl.client.app import TrainResult
from stratafl.errors import ModelFormatError
from stratafl.modelfile.codec import params_from_bytes
from stratafl.params import Params, specs_of, total_bytes
from stratafl.proto import stratafl_pb2 as pb
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_model,
    send_model,
    specs_from_proto,
)

__all__ = ["Metadata", "bearer_metadata", "receive_params", "update_messages"]

Metadata = tuple[tuple[str, str], ...]


def bearer_metadata(token: str | None) -> Metadata | None:
    """The call metadata that carries ``token``; None for an insecure link."""
    return None if token is None else (("authorization", f"Bearer {token}"),)


async def receive_params(messages: AsyncIterable[pb.ModelChunk], what: str) -> Params:
    """A model download rebuilt in memory as read-only arrays (a swarm process may share
    them between its clients, so no app can change them under another)."""
    incoming = await receive_model(messages, what)
    specs = specs_from_proto(incoming.header)
    buffer = bytearray(total_bytes(specs))
    offset = 0
    async for message in incoming.messages:
        if message.WhichOneof("part") != "data":
            raise ModelFormatError(f"{what}: a second header arrived in the middle of the stream")
        end = offset + len(message.data)
        if end > len(buffer):
            raise ModelFormatError(
                f"{what}: received more than the {len(buffer)} bytes the header announced"
            )
        buffer[offset:end] = message.data
        offset = end
    if offset != len(buffer):
        raise ModelFormatError(f"{what} ended after {offset} of {len(buffer)} bytes")
    return params_from_bytes(specs, memoryview(buffer).toreadonly())


def update_messages(
    task: pb.Task,
    client_id: str,
    encoded: Params,
    result: TrainResult,
    seconds: float,
    codec: str,
) -> Iterator[pb.UpdateChunk]:
    """The upload of one update: its header (task, example count, metrics, the layout of
    ``encoded``: ``result``'s params under ``codec``), then the encoded bytes in chunks."""
    metrics: Mapping[str, float] = result.metrics
    header = pb.UpdateHeader(
        task_id=task.task_id,
        client_id=client_id,
        num_examples=int(result.num_examples),
        metrics={k: float(v) for k, v in metrics.items()},
        model=header_to_proto(task.model_id, specs_of(encoded)),
        compute_seconds=seconds,
        codec=codec,
    )
    return send_model(pb.UpdateChunk, header, params_chunks(encoded))
