"""Compressed updates at a real combiner's round runner (no sockets): decoded before the
fold, and every hostile encoding refused with its reason, without failing the round.

A second, honest client answers every round, so each test also pins that the round goes
on with it. The client's side (its residuals kept across a restart) is pinned at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from stratafl.client.feedback import RESIDUALS_FILE, load_feedback, save_feedback
from stratafl.combiner.claims import Caller
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.compression import ErrorFeedback, decode, encode_update, parse_compression
from stratafl.modelfile.codec import save_params
from stratafl.params import Params, TensorSpec, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import OutcomeStatus
from stratafl.transport.outcomes import outcome_from_proto
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_model,
    send_model,
    stream_chunks,
)

GLOBAL = {
    "w": np.linspace(-1, 1, 200, dtype=np.float32).reshape(20, 10),
    "b": np.ones(10, np.float32),
}
TRAINED = {name: array + np.float32(0.25) for name, array in GLOBAL.items()}
Forge = Callable[[Params, str], tuple[Params, str]]
"""(encoded update, its codec) -> what the hostile client sends instead."""


async def _messages(items: list[object]) -> AsyncIterator[object]:
    for item in items:
        yield item


def _honest(encoded: Params, codec: str) -> tuple[Params, str]:
    return encoded, codec


def _run_round(
    tmp_path: Path, compression: str, forge: Forge
) -> tuple[pb.RoundResultHeader, Params | None, dict[str, pb.Ack]]:
    """One round with clients 'hostile' (its update passed through ``forge``) and 'honest'."""
    model_path = tmp_path / "global.safetensors"
    save_params(model_path, GLOBAL)

    def download(model_id: str) -> AsyncIterator[pb.ModelChunk]:
        specs, data = stream_chunks(open(model_path, "rb"))  # noqa: SIM115 - closed by it
        return _messages(list(send_model(pb.ModelChunk, header_to_proto(model_id, specs), data)))  # type: ignore[return-value]

    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    cache = ModelCache(tmp_path / "models", download)
    updates = tmp_path / "updates"
    updates.mkdir()
    runner = CombinerRoundRunner("combiner-0", registry, cache, updates)
    acks: dict[str, pb.Ack] = {}
    codec = parse_compression(compression)

    async def client(client_id: str, forge: Forge) -> None:
        connected = registry.connect(client_id)
        task = await connected.tasks.get()
        assert task is not None and task.compression == str(codec)
        encoded = encode_update(TRAINED, GLOBAL, codec, ErrorFeedback(task.session_id))
        sent, announced = forge(encoded, str(codec))
        header = pb.UpdateHeader(
            task_id=task.task_id,
            client_id=client_id,
            num_examples=10,
            model=header_to_proto(task.model_id, specs_of(sent)),
            codec=announced,
        )
        messages = list(send_model(pb.UpdateChunk, header, params_chunks(sent)))
        incoming = await receive_model(_messages(messages), "an update")  # type: ignore[arg-type]
        acks[client_id] = await runner.accept_update(incoming, Caller(client_id))

    async def main() -> tuple[pb.RoundResultHeader, Params | None]:
        clients = [
            asyncio.ensure_future(client("hostile", forge)),
            asyncio.ensure_future(client("honest", _honest)),
        ]
        await asyncio.sleep(0)  # both connected before the round samples its clients
        spec = pb.RoundSpec(
            session_id="s", round=1, kind=pb.TRAIN, model_id="m0",
            client_ids=["hostile", "honest"], timeout_seconds=10,
            settings=pb.RoundSettings(aggregator="fedavg", compression=compression),
        )  # fmt: skip
        result = await runner.run(spec)
        await asyncio.gather(*clients)
        return result.header, result.partial

    header, partial = asyncio.run(main())
    assert not list(updates.iterdir()), "nothing is left staged, accepted or refused"
    return header, partial, acks


def _status(header: pb.RoundResultHeader, client_id: str) -> tuple[OutcomeStatus, str]:
    outcome = next(o for o in header.outcomes if o.client_id == client_id)
    return outcome_from_proto(outcome.status), outcome.reason


@pytest.mark.parametrize("compression", ["none", "float16", "int8", "topk:fraction=1.0"])
def test_every_codec_is_decoded_to_the_trained_model_before_the_fold(tmp_path, compression):
    header, partial, acks = _run_round(tmp_path, compression, _honest)
    assert all(ack.ok for ack in acks.values()), acks
    assert header.contributors == 2 and partial is not None
    for name, array in TRAINED.items():
        assert partial[name].dtype == np.float32
        np.testing.assert_allclose(partial[name], array, atol=0.25 / 127)


def test_top_k_moves_only_the_largest_entries_of_the_update(tmp_path):
    def larger_change_at_5(encoded: Params, codec: str) -> tuple[Params, str]:
        return {**encoded, "v:w": encoded["v:w"] * 3}, codec

    header, partial, _ = _run_round(tmp_path, "topk:fraction=0.01", larger_change_at_5)
    assert header.contributors == 2 and partial is not None
    changed = np.flatnonzero(partial["w"] != GLOBAL["w"])
    assert 1 <= changed.size <= 2  # one entry of 200 each, maybe the same one


def _refused(tmp_path: Path, compression: str, forge: Forge) -> str:
    """The reason the hostile update was refused; the honest one still made the round."""
    header, partial, acks = _run_round(tmp_path, compression, forge)
    status, reason = _status(header, "hostile")
    assert status == OutcomeStatus.REJECTED and not acks["hostile"].ok
    assert acks["hostile"].message == reason
    assert _status(header, "honest")[0] == OutcomeStatus.OK
    assert header.contributors == 1 and partial is not None and not header.error
    codec = parse_compression(compression)
    honest = encode_update(TRAINED, GLOBAL, codec)
    alone = decode(TensorSpec.of("b", GLOBAL["b"]), honest, GLOBAL["b"], codec)
    np.testing.assert_array_equal(partial["b"], alone)  # the honest update alone
    return reason


def test_an_update_in_another_codec_is_refused_with_a_reason(tmp_path):
    def as_float16(encoded: Params, codec: str) -> tuple[Params, str]:
        return encode_update(TRAINED, GLOBAL, parse_compression("float16")), "float16"

    reason = _refused(tmp_path, "int8", as_float16)
    assert "encoded as 'float16' but this session uses 'int8'" in reason


def test_raw_weights_are_refused_in_a_compressed_session(tmp_path):
    reason = _refused(tmp_path, "float16", lambda encoded, codec: (dict(TRAINED), ""))
    assert "encoded as '' but this session uses 'float16'" in reason


def test_a_header_announcing_more_than_k_entries_is_refused_before_a_byte_is_staged(tmp_path):
    def oversized(encoded: Params, codec: str) -> tuple[Params, str]:
        many = np.arange(150, dtype=np.int32)
        return {**encoded, "i:w": many, "v:w": np.ones(150, np.float32)}, codec

    reason = _refused(tmp_path, "topk:fraction=0.01", oversized)
    assert "'i:w' is I32[150]" in reason


def test_a_header_with_the_raw_layout_under_int8_is_refused(tmp_path):
    reason = _refused(tmp_path, "int8", lambda encoded, codec: (dict(TRAINED), codec))
    assert "tensor names differ" in reason


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        (lambda e: {**e, "i:w": np.array([200, 3], np.int32)}, "outside 0..199"),
        (lambda e: {**e, "i:w": np.array([-1, 3], np.int32)}, "outside 0..199"),
        (lambda e: {**e, "i:w": np.array([7, 7], np.int32)}, "sent twice"),
    ],
)
def test_top_k_indices_out_of_range_or_repeated_are_refused(tmp_path, forge, says):
    reason = _refused(tmp_path, "topk:fraction=0.01", lambda e, codec: (forge(e), codec))
    assert says in reason and "'w'" in reason


@pytest.mark.parametrize("scale", [np.nan, np.inf, -1.0])
def test_an_int8_scale_that_is_not_finite_and_positive_is_refused(tmp_path, scale):
    def bad_scale(encoded: Params, codec: str) -> tuple[Params, str]:
        return {**encoded, "s:b": np.array(scale, np.float32)}, codec

    reason = _refused(tmp_path, "int8", bad_scale)
    assert "int8 scale" in reason and "'b'" in reason


def test_a_float16_update_that_decodes_to_inf_is_refused_by_the_usual_checks(tmp_path):
    def infinite(encoded: Params, codec: str) -> tuple[Params, str]:
        return {**encoded, "b": np.full(10, np.inf, np.float16)}, codec

    reason = _refused(tmp_path, "float16", infinite)
    assert "NaN" in reason


def test_the_residuals_survive_a_restart_in_the_work_folder(tmp_path):
    feedback = ErrorFeedback("session-1", {"w": np.arange(4, dtype=np.float32)})
    save_feedback(tmp_path, feedback)
    again = load_feedback(tmp_path)
    assert again.session_id == "session-1"
    np.testing.assert_array_equal(again.residuals["w"], [0, 1, 2, 3])
    (tmp_path / RESIDUALS_FILE).write_bytes(b"\xff" * 12)  # torn or tampered: not trusted
    assert load_feedback(tmp_path).residuals == {}
    assert load_feedback(None).residuals == {}
