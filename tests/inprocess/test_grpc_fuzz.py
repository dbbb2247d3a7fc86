"""Fuzz the combiner's gRPC handlers with arbitrary messages and stream orders (hypothesis).

A real `CombinerServicer` (its `ClientRegistry`, `ModelCache` and `CombinerRoundRunner`) serves on
127.0.0.1:0 in this process, on an event loop of its own thread. Two clients, alice and
bob, hold task streams, and a training round and a validation round stay open with tasks
for both, so generated messages can name real task ids as well as invented ones. Each
example sends a handful of calls at once: update streams of arbitrary chunks (headers with
any task id, tensor names, dtypes, huge or negative dimensions, NaN metrics; data before
the header, two headers, the right bytes or not; cancelled half-way), validation reports,
task failures, model downloads read partly, task streams, and short rounds of their own.

After every example: no call ended INTERNAL or UNKNOWN (a handler that crashed) or hit its
deadline (a handler that hung); every FedAvg partial weighs exactly the examples of the
updates it reports accepted, and counts exactly those; the server still answers; no file
is left in the combiner's updates folder; every transfer slot is free again. The link is
insecure: the auth layer has its own tests, and here the caller is whoever a message
claims to be.

Races a fuzzer is unlikely to time follow, played by hand on a model large enough that
collecting an update takes milliseconds: an upload cancelled, or its task given up, while
the combiner collects it; two uploads for one task at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
import grpc.aio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import MAX_TRANSFERS, CombinerRoundRunner
from stratafl.combiner.servicer import CombinerServicer
from stratafl.modelfile.codec import save_params
from stratafl.params import Params, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.status import OutcomeStatus
from stratafl.transport.channels import create_aio_server, open_aio_channel
from stratafl.transport.streams import file_chunks, header_to_proto, params_chunks, send_model
from tests.support.fuzz import fuzz_budget

pytestmark = pytest.mark.fuzz

EXAMPLES = fuzz_budget("grpc", 1000)
"""Examples of 1 to 4 calls each: 1,000 by default (about 55 ms each here, under a minute),
``STRATA_FUZZ_GRPC_EXAMPLES`` for more (1,500 before the suite had to fit in 12 minutes)."""
MODEL_ID = "m0"
MODEL = {"w": np.zeros(8, np.float32), "b": np.zeros(3, np.float32)}
CLIENTS = ("alice", "bob")
CALL_SECONDS = 20.0
"""Every call's deadline: a handler that hangs ends DEADLINE_EXCEEDED, which fails."""
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}

REFUSED_EARLY = (grpc.aio.AioRpcError, asyncio.InvalidStateError)
"""What writing to an update stream raises once the server has answered it."""

T = TypeVar("T")
Action = Callable[[], Awaitable[None]]


class FuzzedCombiner:
    """A combiner's servicer on its own event loop thread, with honest clients and open
    rounds; `call` runs a coroutine there from the test's thread."""

    def __init__(self, workdir: Path, model: Params = MODEL) -> None:
        self.workdir = workdir
        self.model = model
        self.updates = workdir / "updates"
        self.model_file = workdir / "controller" / f"{MODEL_ID}.safetensors"
        self.codes: Counter[tuple[str, str]] = Counter()
        self.broken: list[str] = []
        """Calls that ended INTERNAL, UNKNOWN or DEADLINE_EXCEEDED, with their details."""
        self.task_ids: list[str] = []
        """Every task sent to alice or bob, open or not: targets for generated messages."""
        self.owner: dict[str, str] = {}
        """Whom each of those tasks was sent to."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._rounds: dict[int, asyncio.Future[None]] = {}
        self._streams: list[grpc.aio.UnaryStreamCall[Any, Any]] = []

    def call(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def __enter__(self) -> FuzzedCombiner:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        save_params(self.model_file, self.model)
        self.registry = ClientRegistry(100, on_change=lambda client_id, connected: None)
        self.cache = ModelCache(self.workdir / "models", self._download)
        self.runner = CombinerRoundRunner(
            "fuzz", self.registry, self.cache, self.updates, transfer_grace=2.0
        )
        self.server, port = create_aio_server("127.0.0.1:0")
        pb_grpc.add_CombinerServicer_to_server(
            CombinerServicer(self.registry, self.cache, self.runner), self.server
        )
        await self.server.start()
        self.channel = open_aio_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.CombinerStub(self.channel)
        for client_id in CLIENTS:
            stream = self.stub.TaskStream(pb.ClientHello(client_id=client_id))
            self._streams.append(stream)
            asyncio.ensure_future(self._take_tasks(stream, client_id))
        while len(self.registry.ids()) < len(CLIENTS):
            await asyncio.sleep(0.01)

    async def _stop(self) -> None:
        for stream in self._streams:
            stream.cancel()
        await self.server.stop(grace=1)
        await self.channel.close()

    async def _download(self, model_id: str) -> AsyncIterator[pb.ModelChunk]:
        """The controller's model stream: only MODEL_ID exists."""
        if model_id != MODEL_ID:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND, details=f"no model {model_id[:40]!r}"
            )
        specs, data = file_chunks(self.model_file)
        for message in send_model(pb.ModelChunk, header_to_proto(model_id, specs), data):
            yield message

    async def _take_tasks(self, stream: grpc.aio.UnaryStreamCall[Any, Any], client: str) -> None:
        try:
            async for task in stream:
                self.owner[task.task_id] = client
                self.task_ids.append(task.task_id)
        except grpc.aio.AioRpcError:
            pass

    def open_tasks(self) -> list[str]:
        """The tasks sent to alice and bob that still wait for an answer."""
        return [
            task_id
            for task_id in self.task_ids
            if (outcome := self.runner.outcome_of(task_id)) is not None
            and outcome.status == OutcomeStatus.PENDING
        ]

    # -- the rounds that stay open ----------------------------------------------------------

    async def open_rounds(self) -> None:
        """A training and a validation round with a task for alice and bob (new ones when a
        generated message resolved the last)."""
        for kind in (pb.TRAIN, pb.VALIDATE):
            running = self._rounds.get(kind)
            if running is not None and not running.done():
                continue
            if running is not None:
                running.result()  # an error of this harness itself (calls are counted)
            sent = len(self.task_ids)
            spec = pb.RoundSpec(
                session_id="fuzz",
                round=1,
                kind=kind,
                model_id=MODEL_ID,
                client_ids=CLIENTS,
                timeout_seconds=3600,
                settings=pb.RoundSettings(aggregator="fedavg"),
            )
            self._rounds[kind] = asyncio.ensure_future(self.run_round(spec, CALL_SECONDS * 30))
            while len(self.task_ids) < sent + len(CLIENTS) and not self._rounds[kind].done():
                await asyncio.sleep(0.005)

    async def run_round(self, spec: pb.RoundSpec, deadline: float = CALL_SECONDS) -> None:
        """Run a round to its end; a FedAvg round's partial must weigh exactly the examples
        of the updates it counts as accepted, and count exactly those."""

        async def run() -> None:
            async for message in self.stub.RunRound(spec, timeout=deadline):
                if message.WhichOneof("part") == "header" and spec.settings.aggregator == "fedavg":
                    self._check_weight(message.header)

        await self.count("RunRound", run())

    def _check_weight(self, header: pb.RoundResultHeader) -> None:
        accepted = [o for o in header.outcomes if o.status == pb.OUTCOME_OK]
        weight = float(sum(o.num_examples for o in accepted))
        if (header.contributors, header.total_weight) != (len(accepted), weight):
            self.broken.append(
                f"a partial of {header.contributors} contributors weighing "
                f"{header.total_weight:g}, for {len(accepted)} accepted updates of {weight:g}"
            )

    async def send(self, actions: list[Action]) -> None:
        """Send one example's calls all at once."""
        await asyncio.gather(*(action() for action in actions))

    async def status(self) -> None:
        await self.count("GetStatus", self.stub.GetStatus(pb.StatusRequest(), timeout=10))

    # -- what every call ends with ------------------------------------------------------------

    async def count(self, method: str, call: Awaitable[object]) -> None:
        """Await a call; count how it ended (for an `Ack`: accepted or refused)."""
        details = ""
        try:
            answer = await call
            ended = "OK"
            if isinstance(answer, pb.Ack):
                ended = "OK, accepted" if answer.ok else "OK, refused"
        except grpc.aio.AioRpcError as exc:
            ended, details = exc.code().name, exc.details() or ""
        except asyncio.CancelledError:  # the test cancelled it (grpc raises this on cancel)
            ended = "CANCELLED"
        self.codes[(method, ended)] += 1
        if ended in {code.name for code in BROKEN}:
            self.broken.append(f"{method} ended {ended}: {details}")

    # -- after an example: nothing held, nothing left -----------------------------------------

    async def quiet(self, seconds: float = 10.0) -> list[str]:
        """Wait until every transfer slot is free and the updates folder is empty; what is
        still wrong after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        problems: list[str] = []
        while True:
            problems = []
            held = await self._held_slots()
            if held:
                problems.append(f"{held} of {MAX_TRANSFERS} transfer slots still held")
            left = sorted(p.name for p in self.updates.glob("*")) if self.updates.exists() else []
            if left:
                problems.append(f"files left in the updates folder: {left}")
            if not problems or loop.time() > deadline:
                return problems
            await asyncio.sleep(0.02)

    async def _held_slots(self) -> int:
        """How many slots cannot be taken right now (each taken one is given back)."""
        taken = 0
        for _ in range(MAX_TRANSFERS):
            try:
                await asyncio.wait_for(self.runner.transfers.acquire(), 0.01)
            except TimeoutError:
                break
            taken += 1
        for _ in range(taken):
            self.runner.transfers.release()
        return MAX_TRANSFERS - taken


# -- generated messages ----------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
NUMBERS = st.floats(allow_nan=True, allow_infinity=True)
INT64 = st.integers(-(2**63), 2**63 - 1)
EXAMPLE_COUNTS = st.one_of(st.sampled_from([0, 1, 10, -1, 2**62, 2**63 - 1, -(2**63)]), INT64)
DIMS = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]))
DTYPES = st.sampled_from(["F32", "F64", "F16", "I64", "U8", "BOOL", "", "F33", "f32", "I128"])
LAYOUT = header_to_proto(MODEL_ID, [])
LAYOUT.tensors.add(name="w", dtype="F32", shape=[8])
LAYOUT.tensors.add(name="b", dtype="F32", shape=[3])
BODY_BYTES = (8 + 3) * 4


FINITE_METRICS = st.dictionaries(
    st.sampled_from(["accuracy", "loss", "shift"]), st.floats(-1e6, 1e6), max_size=3
)


def _metrics() -> st.SearchStrategy[dict[str, float]]:
    names = st.one_of(st.sampled_from(["accuracy", "loss", "num_examples", ""]), TEXT)
    small = st.dictionaries(names, NUMBERS, max_size=4)
    many = st.integers(60, 70).map(lambda n: {f"m{i}": 1.0 for i in range(n)})
    long_name = st.integers(120, 140).map(lambda n: {"x" * n: 1.0})
    return st.one_of(small, small, small, many, long_name)


def _layouts() -> st.SearchStrategy[pb.ModelHeader]:
    tensor = st.builds(
        pb.TensorSpec,
        name=st.one_of(st.sampled_from(["w", "b", ""]), TEXT),
        dtype=DTYPES,
        shape=st.lists(DIMS, max_size=3),
    )
    invented = st.builds(
        pb.ModelHeader,
        model_id=st.one_of(st.just(MODEL_ID), TEXT),
        tensors=st.lists(tensor, max_size=3),
    )
    return st.one_of(st.just(LAYOUT), st.just(LAYOUT), invented)


def _right_bodies() -> st.SearchStrategy[list[bytes]]:
    """The right number of bytes for LAYOUT, of any values (NaN included), in one chunk or
    two."""
    values = st.lists(st.floats(width=32), min_size=11, max_size=11)
    body = values.map(lambda v: np.asarray(v, np.float32).tobytes())
    split = st.tuples(body, st.integers(0, BODY_BYTES)).map(lambda p: [p[0][: p[1]], p[0][p[1] :]])
    return st.one_of(body.map(lambda b: [b]), split)


def _bodies() -> st.SearchStrategy[list[bytes]]:
    """An update's data: the right bytes, or any."""
    return st.one_of(_right_bodies(), st.lists(st.binary(max_size=64), max_size=3))


class Draw:
    """Draws messages whose ids point at real tasks and clients as often as not."""

    def __init__(self, data: st.DataObject, combiner: FuzzedCombiner) -> None:
        self.data = data
        self.combiner = combiner

    def __call__(self, strategy: st.SearchStrategy[T]) -> T:
        return self.data.draw(strategy)

    def task(self) -> tuple[str, str]:
        """A task id and a client to send it: mostly an open task of the open rounds and its
        own client, else a task that closed or an invented one, from anyone. (The same
        draws are made whatever the server's state: hypothesis replays them.)"""
        where = self(st.sampled_from(["open", "open", "open", "recent", "invented"]))
        index = self(st.integers(0, 7))
        invented = self(TEXT)
        impostor = self(st.one_of(st.sampled_from(CLIENTS), st.just(""), TEXT, st.just("c" * 300)))
        as_owner = self(st.integers(0, 3)) > 0
        pool = self.combiner.open_tasks() if where == "open" else self.combiner.task_ids[-8:]
        if where == "invented" or not pool:
            return invented, impostor
        task_id = pool[index % len(pool)]
        return task_id, self.combiner.owner[task_id] if as_owner else impostor

    def update(self) -> list[pb.UpdateChunk]:
        """An update stream: well-formed but for its values and its task (the deepest path:
        staged, checked, folded), or any chunks in any order."""
        order = self(
            st.sampled_from(
                [
                    "well-formed",
                    "well-formed",
                    "header first",
                    "data first",
                    "two headers",
                    "shuffled",
                ]
            )
        )

        def header(well_formed: bool = False) -> pb.UpdateChunk:
            task_id, client_id = self.task()
            return pb.UpdateChunk(
                header=pb.UpdateHeader(
                    task_id=task_id,
                    client_id=client_id,
                    num_examples=self(st.integers(1, 100) if well_formed else EXAMPLE_COUNTS),
                    metrics=self(FINITE_METRICS if well_formed else _metrics()),
                    model=LAYOUT if well_formed else self(_layouts()),
                    compute_seconds=self(NUMBERS),
                )
            )

        if order == "well-formed":
            return [header(well_formed=True), *map(_data, self(_right_bodies()))]
        data = [_data(chunk) for chunk in self(_bodies())]
        if order == "header first":
            return [header(), *data]
        if order == "data first":
            return [*data, header()]
        if order == "two headers":
            return [header(), *data[:1], header(), *data[1:]]
        messages = [header(), *data, *([header()] if self(st.booleans()) else [])]
        return self(st.permutations(messages))


def _data(chunk: bytes) -> pb.UpdateChunk:
    return pb.UpdateChunk(data=chunk)


def _upload(draw: Draw) -> Action:
    """An update stream; cancelled after a while (holding its slot, if it took one), or
    ended by the client."""
    messages = draw.update()
    cancel = draw(st.one_of(st.none(), st.floats(0, 0.05)))

    async def send() -> object:
        call = draw.combiner.stub.UploadUpdate(timeout=CALL_SECONDS)
        try:
            for message in messages:
                await call.write(message)
            if cancel is None:
                await call.done_writing()
            else:
                await asyncio.sleep(cancel)
                call.cancel()
        except REFUSED_EARLY:
            pass  # the server answered before it read everything: its answer is the result
        return await call

    return lambda: draw.combiner.count("UploadUpdate", send())


def _validation(draw: Draw) -> Action:
    task_id, client_id = draw.task()
    report = pb.ValidationReport(task_id=task_id, client_id=client_id, metrics=draw(_metrics()))
    stub = draw.combiner.stub
    return lambda: draw.combiner.count(
        "ReportValidation", stub.ReportValidation(report, timeout=CALL_SECONDS)
    )


def _failure(draw: Draw) -> Action:
    task_id, client_id = draw.task()
    failure = pb.TaskFailure(
        task_id=task_id,
        client_id=client_id,
        reason=draw(st.one_of(TEXT, st.just("r" * 5000))),
    )
    stub = draw.combiner.stub
    return lambda: draw.combiner.count(
        "ReportFailure", stub.ReportFailure(failure, timeout=CALL_SECONDS)
    )


def _download(draw: Draw) -> Action:
    """A model download, read whole or only its first ``read`` messages, then cancelled."""
    request = pb.ModelRequest(
        model_id=draw(st.one_of(st.just(MODEL_ID), TEXT)), task_id=draw.task()[0]
    )
    read = draw(st.one_of(st.none(), st.integers(0, 2)))

    async def receive() -> None:
        call = draw.combiner.stub.DownloadModel(request, timeout=CALL_SECONDS)
        if read == 0:
            call.cancel()
        got = 0
        async for _ in call:
            got += 1
            if read is not None and got >= read:
                call.cancel()

    return lambda: draw.combiner.count("DownloadModel", receive())


def _hello(draw: Draw) -> Action:
    """A task stream under any name, closed by the client after 20 ms."""
    hello = pb.ClientHello(client_id=draw.task()[1])

    async def listen() -> None:
        call = draw.combiner.stub.TaskStream(hello, timeout=CALL_SECONDS)
        asyncio.get_running_loop().call_later(0.02, call.cancel)
        async for _ in call:
            pass

    return lambda: draw.combiner.count("TaskStream", listen())


def _round(draw: Draw) -> Action:
    """A short round of its own, beside the open ones (as the controller would ask)."""
    aggregators = st.sampled_from(["fedavg", "median", "krum:f=1", "", "x:y=z"])
    spec = pb.RoundSpec(
        session_id=draw(TEXT),
        round=draw(st.integers(-(2**31), 2**31 - 1)),
        kind=cast(pb.TaskKind, draw(st.sampled_from([0, 1, 2, 7]))),  # 7: no such kind
        model_id=draw(st.one_of(st.just(MODEL_ID), TEXT)),
        num_clients=draw(st.integers(-3, 3)),
        client_ids=draw(st.lists(st.sampled_from([*CLIENTS, "nobody"]), max_size=3)),
        timeout_seconds=draw(st.floats(-1, 0.2)),
        config_json=draw(st.one_of(st.just(""), TEXT)),
        seed=draw(INT64),
        settings=pb.RoundSettings(
            aggregator=draw(st.one_of(aggregators, TEXT)),
            max_examples_per_client=draw(INT64),
        ),
    )
    return lambda: draw.combiner.run_round(spec)


ACTIONS = [_upload, _upload, _upload, _validation, _failure, _download, _hello, _round]
"""What a call of an example may be (updates, the richest, drawn most often)."""


def _actions(draw: Draw) -> list[Action]:
    return [draw(st.sampled_from(ACTIONS))(draw) for _ in range(draw(st.integers(1, 4)))]


def test_the_combiners_handlers_survive_arbitrary_messages(tmp_path, capsys):
    with FuzzedCombiner(tmp_path) as combiner:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            combiner.call(combiner.open_rounds())
            actions = _actions(Draw(data, combiner))
            answered = combiner.codes[("GetStatus", "OK")]
            combiner.broken.clear()
            combiner.call(combiner.send(actions))
            assert combiner.call(combiner.quiet()) == []
            assert combiner.broken == []
            combiner.call(combiner.status())  # the server still answers
            assert combiner.codes[("GetStatus", "OK")] == answered + 1

        try:
            fuzz()
            combiner.call(combiner.open_rounds())  # the open rounds ended well, if they ended
        finally:
            examples = combiner.codes[("GetStatus", "OK")]
            calls = sum(combiner.codes.values()) - examples
            with capsys.disabled():
                print(f"\ngRPC fuzz: {examples} examples passed, {calls} calls")
                for (method, ended), n in sorted(combiner.codes.items()):
                    print(f"  {method:<17} {ended:<20} {n}")


# -- races a fuzzer is unlikely to time, played by hand ------------------------------------

BIG = 8_000_000
"""Weights of the model of the race tests (32 MB): folding it takes a few milliseconds."""
HONEST, HOSTILE = "bob", "alice"


def _big(value: float) -> Params:
    return {"w": np.full(BIG, value, np.float32), "b": np.full(3, value, np.float32)}


def _update(task_id: str, client_id: str, params: Params, num_examples: int) -> list[Any]:
    header = pb.UpdateHeader(
        task_id=task_id,
        client_id=client_id,
        num_examples=num_examples,
        model=header_to_proto(MODEL_ID, specs_of(params)),
    )
    return list(send_model(pb.UpdateChunk, header, params_chunks(params, 1 << 20)))


async def _answer(call: Any) -> str:
    """An upload's end: "accepted", "refused: <why>", or the status it ended with."""
    try:
        ack = await call
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    except asyncio.CancelledError:
        return "CANCELLED"
    return "accepted" if ack.ok else f"refused: {ack.message}"


class Race:
    """One training round on a `FuzzedCombiner` of the big model, played by hand."""

    def __init__(self, combiner: FuzzedCombiner) -> None:
        self.combiner = combiner
        self.stub = combiner.stub

    async def open(self) -> dict[str, str]:
        """Start the round; returns each client's task id."""
        sent = len(self.combiner.task_ids)
        spec = pb.RoundSpec(
            session_id="race",
            round=1,
            kind=pb.TRAIN,
            model_id=MODEL_ID,
            client_ids=CLIENTS,
            timeout_seconds=30,
            settings=pb.RoundSettings(aggregator="fedavg"),
        )
        self.call = self.stub.RunRound(spec, timeout=60)
        self.result = asyncio.ensure_future(self._read_result())
        while len(self.combiner.task_ids) < sent + len(CLIENTS):
            await asyncio.sleep(0.002)
        return {self.combiner.owner[t]: t for t in self.combiner.task_ids[sent:]}

    async def _read_result(self) -> tuple[pb.RoundResultHeader, np.ndarray]:
        header, data = None, bytearray()
        async for message in self.call:
            if message.WhichOneof("part") == "header":
                header = message.header
            else:
                data += message.data
        assert header is not None
        return header, np.frombuffer(bytes(data), np.float32)

    def staged(self, task_id: str) -> Path:
        return self.combiner.updates / f"{task_id}.safetensors"


async def _interrupt_once_staged(combiner: FuzzedCombiner, how: str, delay: float) -> str:
    """alice sends a whole update (1000 everywhere, 10**6 examples) and, ``delay`` s after
    the combiner staged it (as it starts collecting it), cancels her call ("cancel") or
    reports that she failed her task ("give up"); bob sends an honest update (1.0, 20
    examples). Returns what is wrong with the round's result ("" if nothing)."""
    race = Race(combiner)
    tasks = await race.open()
    call = race.stub.UploadUpdate(timeout=60)
    for message in _update(tasks[HOSTILE], HOSTILE, _big(1000.0), 10**6):
        await call.write(message)
    await call.done_writing()
    while not race.staged(tasks[HOSTILE]).exists() and not call.done():
        await asyncio.sleep(0)
    await asyncio.sleep(delay)
    giving_up = pb.TaskFailure(task_id=tasks[HOSTILE], client_id=HOSTILE, reason="gave up")
    if how == "cancel":
        call.cancel()
        hostile = await _answer(call)
        await asyncio.sleep(0.2)  # whatever the cancelled call left running has ended
        await race.stub.ReportFailure(giving_up, timeout=10)
    else:
        gave_up = await race.stub.ReportFailure(giving_up, timeout=10)
        hostile = f"{await _answer(call)}; failure {'taken' if gave_up.ok else 'refused'}"
    honest = race.stub.UploadUpdate(_update(tasks[HONEST], HONEST, _big(1.0), 20), timeout=60)
    assert await _answer(honest) == "accepted"
    header, partial = await race.result
    counted = {o.client_id for o in header.outcomes if o.status == pb.OUTCOME_OK}
    if counted == {HONEST}:
        expected, weight = 1.0, 20.0
    else:  # alice's update counted whole: it was accepted before she changed her mind
        expected, weight = (1000.0 * 10**6 + 20) / (10**6 + 20), 10**6 + 20.0
    seen = (header.contributors, header.total_weight, float(partial[0]), float(partial[-1]))
    if seen != pytest.approx((len(counted), weight, expected, expected), rel=1e-5):
        return (
            f"{how} {delay * 1000:.0f} ms after staging ({hostile}): counted {sorted(counted)},"
            f" contributors {seen[0]}, weight {seen[1]:g}, w {seen[2]:g}, b {seen[3]:g}; "
            f"expected weight {weight:g} and every weight {expected:g}"
        )
    return ""


@pytest.mark.parametrize("how", ["cancel", "give up"])
def test_an_update_interrupted_while_it_is_collected_counts_whole_or_not_at_all(tmp_path, how):
    # The combiner folds an update in a worker thread; meanwhile the client may cancel its
    # call, or report that it failed the task. Whatever the moment, the update must count
    # whole (its weight, as a contributor, every tensor) or not at all: otherwise a client
    # puts values into the partial that no weight and no contributor accounts for, past
    # every bound the controller checks, or makes its combiner's partial fail that check.
    with FuzzedCombiner(tmp_path, model=_big(0.0)) as combiner:
        delays = [i / 1000 for i in range(0, 40, 2)]
        wrong = [combiner.call(_interrupt_once_staged(combiner, how, d)) for d in delays]
        assert combiner.call(combiner.quiet()) == []
    problems = [w for w in wrong if w]
    assert problems == [], "\n".join(problems)


def test_two_uploads_for_one_task_at_once_do_not_share_a_staging_file(tmp_path):
    # alice opens two update streams for her task: the first (1.0 everywhere) nearly
    # complete, the second (NaN) started before the first ends and finished after it.
    with FuzzedCombiner(tmp_path, model=_big(0.0)) as combiner:

        async def play() -> tuple[str, str, pb.RoundResultHeader, np.ndarray]:
            race = Race(combiner)
            tasks = await race.open()
            first = _update(tasks[HOSTILE], HOSTILE, _big(1.0), 10)
            second = _update(tasks[HOSTILE], HOSTILE, _big(float("nan")), 10)
            a, b = race.stub.UploadUpdate(timeout=60), race.stub.UploadUpdate(timeout=60)
            for message in first[:-1]:
                await a.write(message)
            with contextlib.suppress(*REFUSED_EARLY):  # it may be refused at its header
                for message in second[:2]:
                    await b.write(message)
            await asyncio.sleep(0.2)  # the second's header and first bytes have arrived
            await a.write(first[-1])
            await a.done_writing()
            for message in second[2:]:
                with contextlib.suppress(*REFUSED_EARLY):  # it may be refused early
                    await b.write(message)
            with contextlib.suppress(*REFUSED_EARLY):
                await b.done_writing()
            answers = await _answer(a), await _answer(b)
            failure = pb.TaskFailure(task_id=tasks[HONEST], client_id=HONEST, reason="none")
            await race.stub.ReportFailure(failure, timeout=10)
            return (*answers, *(await race.result))

        first, second, header, partial = combiner.call(play())
        assert combiner.call(combiner.quiet()) == []
    assert not second.startswith(("UNKNOWN", "INTERNAL")), second
    assert first == "accepted" and second.startswith("refused"), (first, second)
    assert (header.contributors, header.total_weight) == (1, 10.0)
    assert float(partial[0]) == float(partial[-1]) == 1.0
