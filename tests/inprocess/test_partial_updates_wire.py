"""Partial updates through the real round code (no sockets): combiners' round runners fold
them per tensor, their partials travel with per-tensor weights through the controller's
stream reader into the reducer, and the result is the flat per-tensor mean. Every hostile
partial update is refused with its reason while the round goes on; so are per-tensor
weights a combiner should not have sent. The client's choice of tensors is pinned last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from stratafl.aggregate import ServerOptState, parse_aggregator
from stratafl.combiner.claims import Caller
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import CombinerRoundRunner, RoundResult
from stratafl.compression import (
    encode_update,
    parse_compression,
    parse_partial_updates,
    partial_of,
)
from stratafl.controller.link import CombinerAnswer, read_answer
from stratafl.controller.reducer import Reducer
from stratafl.controller.tally import check_partial
from stratafl.errors import ConfigError, ModelFormatError, UpdateRejected
from stratafl.modelfile.codec import save_params
from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.records import ClientOutcome
from stratafl.settings import SessionConfig
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
    "u": np.arange(3, dtype=np.float32),  # no client sends it: it keeps its value
}
RANDOM = "random:fraction=0.5"
Messages = Callable[[pb.Task], list[pb.UpdateChunk]]
"""A client: the update messages it sends for a task."""


async def _aiter(items: list[object]) -> AsyncIterator[object]:
    for item in items:
        yield item


def _update(task: pb.Task, client_id: str, params: Params, examples: int, codec: str = ""):
    header = pb.UpdateHeader(
        task_id=task.task_id,
        client_id=client_id,
        num_examples=examples,
        model=header_to_proto(task.model_id, specs_of(params)),
        codec=codec,
    )
    return list(send_model(pb.UpdateChunk, header, params_chunks(params)))


def _sends(names: list[str], shift: float, examples: int) -> Callable[[str], Messages]:
    """An honest client that trained ``GLOBAL + shift`` and sends the tensors ``names``."""
    params = {name: (GLOBAL[name] + np.float32(shift)) for name in names}
    return lambda client_id: lambda task: _update(task, client_id, params, examples)


def _combiner(
    tmp_path: Path, combiner_id: str, clients: dict[str, Callable[[str], Messages]]
) -> tuple[CombinerRoundRunner, Callable[[pb.RoundSpec], object], dict[str, pb.Ack]]:
    """A combiner's round runner with its clients, and the coroutine that runs one round."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_path = tmp_path / "global.safetensors"
    save_params(model_path, GLOBAL)

    def download(model_id: str) -> AsyncIterator[pb.ModelChunk]:
        specs, data = stream_chunks(open(model_path, "rb"))  # noqa: SIM115 - closed by it
        return _aiter(list(send_model(pb.ModelChunk, header_to_proto(model_id, specs), data)))  # type: ignore[return-value]

    folder = tmp_path / combiner_id
    registry = ClientRegistry(10, on_change=lambda client_id, connected: None)
    (folder / "updates").mkdir(parents=True)
    cache = ModelCache(folder / "models", download)
    runner = CombinerRoundRunner(combiner_id, registry, cache, folder / "updates")
    acks: dict[str, pb.Ack] = {}

    async def client(client_id: str, make: Messages) -> None:
        connected = registry.connect(client_id)
        task = await connected.tasks.get()
        assert task is not None
        incoming = await receive_model(_aiter(make(task)), "an update")  # type: ignore[arg-type]
        acks[client_id] = await runner.accept_update(incoming, Caller(client_id))

    async def round_(spec: pb.RoundSpec) -> RoundResult:
        answering = [asyncio.ensure_future(client(c, m(c))) for c, m in clients.items()]
        spec.client_ids.extend(clients)  # the controller's selection: every client
        await asyncio.sleep(0)  # every client connected before the round samples
        try:
            return await runner.run(spec)
        finally:
            await asyncio.gather(*answering, return_exceptions=True)

    return runner, round_, acks


def _spec(partial: str = RANDOM, aggregator: str = "fedavg", compression: str = "none"):
    return pb.RoundSpec(
        session_id="s", round=1, kind=pb.TRAIN, model_id="m0", num_clients=0,
        timeout_seconds=10,
        settings=pb.RoundSettings(
            aggregator=aggregator, compression=compression, partial_updates=partial
        ),
    )  # fmt: skip


def _one_combiner(tmp_path, clients, spec=None) -> tuple[pb.RoundResultHeader, Params | None, dict]:
    _, round_, acks = _combiner(tmp_path, "combiner-0", clients)
    result = asyncio.run(round_(spec or _spec()))  # type: ignore[arg-type]
    assert not list((tmp_path / "combiner-0" / "updates").iterdir()), "nothing left staged"
    return result.header, result.partial, acks


def _status(header: pb.RoundResultHeader, client_id: str) -> tuple[OutcomeStatus, str]:
    outcome = next(o for o in header.outcomes if o.client_id == client_id)
    return outcome_from_proto(outcome.status), outcome.reason


def test_partials_of_partial_updates_merge_exactly_to_the_flat_per_tensor_mean(tmp_path):
    # combiner-0's clients send only b; combiner-1's send w, and w and b. Nobody sends u.
    first = {"c0": _sends(["b"], 1.0, 10), "c1": _sends(["b"], 2.0, 30)}
    second = {"c2": _sends(["w"], 3.0, 20), "c3": _sends(["w", "b"], 4.0, 40)}
    runners = [_combiner(tmp_path, f"combiner-{i}", c) for i, c in enumerate((first, second))]

    async def main() -> list[CombinerAnswer]:
        results = await asyncio.gather(*(round_(_spec()) for _, round_, _ in runners))
        staging = tmp_path / "staging"
        staging.mkdir()
        return [await _read(r, f"combiner-{i}", staging) for i, r in enumerate(results)]

    answers = asyncio.run(main())
    assert answers[0].tensor_weights == {"b": 40.0}  # its partial holds b alone
    assert answers[1].tensor_weights == {"w": 60.0, "b": 40.0}
    assert [a.total_weight for a in answers] == [40.0, 60.0]
    full = asyncio.run(_full_answer_bytes(tmp_path))
    assert full - answers[0].wire_bytes > 750  # w's 800 bytes (and u's) never travelled

    reducer = Reducer(parse_aggregator("fedavg"), GLOBAL)

    async def reduce() -> None:
        for answer in answers:
            check_partial(answer, partial_updates=True)
            assert answer.partial is not None
            await reducer.add(answer.partial, answer.total_weight, answer.tensor_weights)

    asyncio.run(reduce())
    merged, _ = reducer.result(ServerOptState())
    # flat: w from c2 (20, +3) and c3 (40, +4); b from c0 (10, +1), c1 (30, +2), c3 (40, +4)
    np.testing.assert_allclose(merged["w"], GLOBAL["w"] + (20 * 3 + 40 * 4) / 60, rtol=1e-6)
    np.testing.assert_allclose(merged["b"], GLOBAL["b"] + (10 + 60 + 160) / 80, rtol=1e-6)
    np.testing.assert_array_equal(merged["u"], GLOBAL["u"])


async def _full_answer_bytes(tmp_path: Path) -> int:
    """What combiner-0's answer costs when its clients send every tensor."""
    both = {"f0": _sends(list(GLOBAL), 1.0, 10), "f1": _sends(list(GLOBAL), 2.0, 30)}
    _, round_, _ = _combiner(tmp_path / "full", "combiner-0", both)
    result = await round_(_spec())  # type: ignore[misc]
    assert not result.header.tensor_weights  # full updates: no per-tensor weights at all
    (tmp_path / "full" / "staging").mkdir()
    return (await _read(result, "combiner-0", tmp_path / "full" / "staging")).wire_bytes


async def _read(result: RoundResult, combiner_id: str, staging: Path) -> CombinerAnswer:
    """A combiner's result as the controller reads it off the stream."""
    messages = _aiter(list(result.messages()))
    return await read_answer(messages, combiner_id, staging, specs_of(GLOBAL))  # type: ignore[arg-type]


def _refused(tmp_path: Path, hostile: Callable[[str], Messages], spec=None) -> str:
    """The reason the hostile update was refused; the honest one still made the round."""
    honest = _sends(["w"] if spec is None else list(GLOBAL), 1.0, 10)
    clients = {"hostile": hostile, "honest": honest}
    header, partial, acks = _one_combiner(tmp_path, clients, spec)
    status, reason = _status(header, "hostile")
    assert status == OutcomeStatus.REJECTED and not acks["hostile"].ok, reason
    assert acks["hostile"].message == reason
    assert _status(header, "honest")[0] == OutcomeStatus.OK
    assert header.contributors == 1 and partial is not None and not header.error
    if spec is None:  # the honest partial update alone, weighed per tensor
        assert set(partial) == {"w"} and dict(header.tensor_weights) == {"w": 10.0}
    return reason


def _raw(names_and_arrays: list[tuple[str, np.ndarray]]) -> Callable[[str], Messages]:
    """A client whose header lists ``names_and_arrays`` as given (repeats and all)."""

    def make(client_id: str) -> Messages:
        def messages(task: pb.Task) -> list[pb.UpdateChunk]:
            model = pb.ModelHeader(model_id=task.model_id)
            for name, array in names_and_arrays:
                spec = specs_of({name: array})[0]
                model.tensors.add(name=name, dtype=spec.dtype, shape=list(spec.shape))
            header = pb.UpdateHeader(
                task_id=task.task_id, client_id=client_id, num_examples=5, model=model
            )
            data = b"".join(np.ascontiguousarray(a).tobytes() for _, a in names_and_arrays)
            return [pb.UpdateChunk(header=header)] + ([pb.UpdateChunk(data=data)] if data else [])

        return messages

    return make


B = GLOBAL["b"]


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        ([], "holds no tensor"),
        ([("zz", B)], "tensors ['zz'] that the global model has not"),
        ([("b", B.reshape(2, 5))], "'b' is F32[2, 5]"),
        ([("b", B.astype(np.float64))], "'b' is F64[10]"),
        ([("b", B), ("b", B)], "names a tensor twice"),
        ([("b", B), ("scaffold.c/b", B)], "['scaffold.c/b'] that the global model has not"),
    ],
)
def test_a_hostile_partial_update_is_refused_with_its_reason(tmp_path, sent, says):
    reason = _refused(tmp_path, _raw(sent))
    assert says in reason


def test_a_tensor_sent_only_in_part_under_a_codec_is_refused(tmp_path):
    codec = parse_compression("int8")

    def scale_missing(client_id: str) -> Messages:
        encoded = encode_update({"b": B + 1}, {"b": B}, codec)
        del encoded["s:b"]
        return lambda task: _update(task, client_id, encoded, 5, str(codec))

    honest = encode_update({"w": GLOBAL["w"] + 1}, {"w": GLOBAL["w"]}, codec)
    clients = {
        "hostile": scale_missing,
        "honest": lambda c: lambda task: _update(task, c, honest, 10, str(codec)),
    }
    header, partial, _ = _one_combiner(tmp_path, clients, _spec(compression="int8"))
    status, reason = _status(header, "hostile")
    assert status == OutcomeStatus.REJECTED and "missing ['s:b']" in reason
    assert _status(header, "honest")[0] == OutcomeStatus.OK
    assert partial is not None and set(partial) == {"w"}  # decoded: only what was sent
    np.testing.assert_allclose(partial["w"], GLOBAL["w"] + 1, atol=2 / 127)


def test_a_partial_update_in_a_session_of_full_updates_is_refused(tmp_path):
    reason = _refused(tmp_path, _sends(["b"], 1.0, 5), _spec(partial=""))
    assert "missing ['w', 'u']" in reason or "missing ['u', 'w']" in reason


def test_a_full_update_is_a_valid_partial_update_and_adds_no_tensor_weights(tmp_path):
    clients = {"a": _sends(list(GLOBAL), 1.0, 10), "b": _sends(list(GLOBAL), 3.0, 30)}
    header, partial, acks = _one_combiner(tmp_path, clients)
    assert all(ack.ok for ack in acks.values()) and partial is not None
    assert not header.tensor_weights and header.total_weight == 40
    np.testing.assert_allclose(partial["u"], GLOBAL["u"] + 2.5)


def test_a_partial_session_with_a_rule_that_cannot_take_partial_updates_fails_the_round(
    tmp_path,
):
    with pytest.raises(ConfigError, match="partial updates need the fedavg rule"):
        _one_combiner(tmp_path, {}, _spec(aggregator="median"))


def _answer(tensor_weights: dict[str, float], total: float = 40.0) -> CombinerAnswer:
    ok = ClientOutcome(client_id="c", status=OutcomeStatus.OK, num_examples=40)
    return CombinerAnswer(
        combiner_id="k", contributors=1, total_weight=total,
        tensor_weights=tensor_weights, outcomes=[ok],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("weights", "says"),
    [({"w": 41.0}, "outside (0, 40]"), ({"w": 0.0}, "outside"), ({"w": float("nan")}, "outside")],
)
def test_the_controller_refuses_per_tensor_weights_it_cannot_believe(weights, says):
    with pytest.raises(UpdateRejected, match=says.replace("(", r"\(")):
        check_partial(_answer(weights), partial_updates=True)
    with pytest.raises(UpdateRejected, match="takes full updates"):
        check_partial(_answer({"w": 10.0}), partial_updates=False)
    check_partial(_answer({"w": 10.0, "b": 40.0}), partial_updates=True)
    check_partial(_answer({}), partial_updates=False)


@pytest.mark.parametrize(
    ("weights", "says"),
    [({"zz": 1.0}, "weighs tensors ['zz']"), ({"w": 1.0}, "names differ"), ({}, "names differ")],
)
def test_the_controller_refuses_a_partial_laid_out_otherwise_than_its_weights(
    tmp_path, weights, says
):
    """The partial holds only b; its tensor weights must name exactly that."""
    header = pb.RoundResultHeader(combiner_id="k", contributors=1, total_weight=5)
    header.tensor_weights.update(weights)
    result = RoundResult(header, {"b": B})
    with pytest.raises(ModelFormatError, match=says.replace("[", r"\[")):
        asyncio.run(read_answer(_aiter(list(result.messages())), "k", tmp_path, specs_of(GLOBAL)))  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir()), "a refused partial is not left staged"


# -- the client's choice --------------------------------------------------------------------

NAMES = [f"layer{i}.{kind}" for i in range(10) for kind in ("weight", "bias")]


def test_a_client_sends_a_seeded_random_share_of_its_tensors_at_least_one():
    half = parse_partial_updates(RANDOM)
    chosen = half.choose(NAMES, seed=7, client_id="client-1")
    assert len(chosen) == 10 and set(chosen) <= set(NAMES)
    assert chosen == [n for n in NAMES if n in chosen]  # in the model's order
    assert chosen == half.choose(NAMES, seed=7, client_id="client-1")  # reproducible
    assert set(chosen) == set(half.choose(NAMES[::-1], seed=7, client_id="client-1"))
    others = {tuple(half.choose(NAMES, seed=s, client_id=c)) for s in range(5) for c in "abc"}
    assert len(others) > 10  # rounds and clients draw different subsets
    tiny = parse_partial_updates("random:fraction=0.001")
    assert len(tiny.choose(NAMES, seed=0, client_id="x")) == 1
    assert len(tiny.choose(["only"], seed=0, client_id="x")) == 1
    seen = {n for s in range(200) for n in tiny.choose(NAMES, seed=s, client_id="x")}
    assert seen == set(NAMES)  # over rounds, every tensor is sent
    assert parse_partial_updates("none").choose(NAMES, seed=0, client_id="x") == NAMES
    assert parse_partial_updates("").choose(NAMES, seed=0, client_id="x") == NAMES


def test_partial_of_takes_the_same_tensors_of_the_trained_and_the_global_model():
    trained = {"w": GLOBAL["w"] + 1, "b": B + 1, "u": GLOBAL["u"] + 1}
    sent, base = partial_of(
        trained, GLOBAL, parse_partial_updates("random:fraction=0.3"), seed=3, client_id="c"
    )
    assert len(sent) == 1 and set(sent) == set(base)
    name = next(iter(sent))
    assert sent[name] is trained[name] and base[name] is GLOBAL[name]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("random", "needs fraction=F"),
        ("random:fraction=0", "out of range"),
        ("random:fraction=1.5", "out of range"),
        ("random:fraction=nan", "out of range"),
        ("random:fraction=x", "not a number"),
        ("layers:fraction=0.5", "unknown partial_updates"),
        ("none:fraction=0.5", "takes no options"),
    ],
)
def test_a_bad_partial_updates_setting_is_refused_naming_the_fix(text, says):
    with pytest.raises(ConfigError, match=says) as refused:
        parse_partial_updates(text)
    assert "random:fraction=F" in str(refused.value)
    with pytest.raises(ValueError, match=says):
        SessionConfig(partial_updates=text)


def test_the_session_setting_is_canonical_and_needs_fedavg_without_scaffold():
    assert SessionConfig(partial_updates=" Random:fraction=.5").partial_updates == RANDOM
    assert SessionConfig(partial_updates=RANDOM, aggregator="fedavg+fedadam").partial_updates
    with pytest.raises(ValueError, match="use aggregator 'fedavg'"):
        SessionConfig(partial_updates=RANDOM, aggregator="median")
    with pytest.raises(ValueError, match="drift_correction 'none'"):
        SessionConfig(partial_updates=RANDOM, drift_correction="scaffold")
