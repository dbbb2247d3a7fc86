"""A whole federation in one event loop, with no process and no socket.

The controller's round and session loop, the reducer, the combiners' round runners and the
model streams are the real code; only gRPC is replaced: a `LocalLink` hands the round
spec to a combiner's `RoundRunner` and reads its answer through the same stream functions
the gRPC link uses, and each client is a coroutine that answers its tasks the way a
scripted `Behaviour` says. The federation assigns each client to the combiner a test
puts it on, and each client signs its receipts with its key, as real clients do.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from stratafl.combiner.claims import Caller
from stratafl.combiner.model_cache import ModelCache
from stratafl.combiner.registry import ClientRegistry
from stratafl.combiner.runner import CombinerRoundRunner
from stratafl.controller.link import CombinerAnswer, RoundTask, read_answer, round_spec
from stratafl.controller.sessions import SessionRunner
from stratafl.controller.trail import ModelTrail
from stratafl.errors import UnavailableError
from stratafl.modelfile.codec import copy_params_from_file, copy_params_from_stream, save_params
from stratafl.observe.watchers import SessionWatcher
from stratafl.params import TensorSpec, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security.receipts import ReceiptKeys, Statement, make_receipt
from stratafl.store.models import ModelStore
from stratafl.store.state import StateStore
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_model,
    send_model,
    stream_chunks,
)

T = TypeVar("T")


class Behaviour(enum.Enum):
    HONEST = "honest"  # adds (index + 1) to every weight, 10 * (index + 1) examples
    NAN = "nan"  # sends NaN: rejected
    SILENT = "silent"  # never answers: timeout
    FAILS = "fails"  # its own code fails and says so
    DROPS = "drops"  # its stream breaks as soon as it gets a task
    BAD_RECEIPT = "bad receipt"  # an honest update, signed with another client's key


async def aiter_of(messages: Iterable[object]) -> AsyncIterator[object]:
    for message in messages:
        yield message


@dataclass
class LocalCombiner:
    combiner_id: str
    registry: ClientRegistry
    rounds: CombinerRoundRunner
    cache: ModelCache
    dead: bool = False


class LocalLink:
    """A `CombinerLink` to an in-process combiner: the stream without the socket."""

    def __init__(self, combiner: LocalCombiner, receipts: ReceiptKeys) -> None:
        self._combiner = combiner
        self._receipts = receipts

    @property
    def combiner_id(self) -> str:
        return self._combiner.combiner_id

    async def client_ids(self) -> list[str]:
        if self._combiner.dead:
            raise UnavailableError(f"combiner {self.combiner_id} is gone")
        return self._combiner.registry.ids()

    async def run_round(
        self, task: RoundTask, clients: Sequence[str], staging: Path, expect: Sequence[TensorSpec]
    ) -> CombinerAnswer:
        if self._combiner.dead:
            raise UnavailableError(f"combiner {self.combiner_id} is gone")
        result = await self._combiner.rounds.run(round_spec(task, clients, self._receipts))
        return await read_answer(aiter_of(result.messages()), self.combiner_id, staging, expect)


class InProcessFederation:
    """Implements the controller's `Federation` over in-process combiners."""

    def __init__(self, workdir: Path, *, watch: SessionWatcher | None = None) -> None:
        self.workdir = workdir
        self.store = StateStore(f"sqlite:///{workdir / 'state.db'}").open()
        self.models = ModelStore(workdir / "models")
        self.trail = ModelTrail(self.store, self.models, workdir / "staging")
        self.combiners: list[LocalCombiner] = []
        self.offline: dict[str, str] = {}
        self.receipts = ReceiptKeys.generate()
        self._assigned: dict[str, set[str]] = {}
        self.sessions = SessionRunner(
            self.store, self.trail, self, workdir / "staging", watch=watch
        )
        self._pending: list[
            tuple[LocalCombiner, str, asyncio.Queue[pb.Task | None], int, Behaviour, bytes]
        ] = []

    # -- the Federation protocol ------------------------------------------------------------

    def online(self) -> list[LocalLink]:
        return [
            LocalLink(c, self.receipts) for c in self.combiners if c.combiner_id not in self.offline
        ]

    async def mark_offline(self, combiner_id: str, reason: str) -> None:
        self.offline[combiner_id] = reason

    async def even_load(self) -> None:
        """Each test places its clients on the combiners it means: nothing moves them."""

    async def wait_for_clients(self, count: int, timeout: float) -> int:
        return sum(len(c.registry.ids()) for c in self.combiners)

    def assigned(self, combiner_id: str) -> frozenset[str]:
        return frozenset(self._assigned.get(combiner_id, ()))

    # -- building it ----------------------------------------------------------------------

    def seed(self, params: dict[str, np.ndarray]) -> str:
        staged = self.trail.staging_path("seed")
        save_params(staged, params)
        return self.trail.publish_file(staged, parameters=sum(a.size for a in params.values())).id

    def add_combiner(self, combiner_id: str) -> LocalCombiner:
        folder = self.workdir / combiner_id

        def download(model_id: str) -> AsyncIterator[pb.ModelChunk]:
            specs, data = stream_chunks(self.models.open(model_id))  # as the controller does
            return aiter_of(send_model(pb.ModelChunk, header_to_proto(model_id, specs), data))  # type: ignore[return-value]

        registry = ClientRegistry(1000, on_change=lambda client_id, connected: None)
        cache = ModelCache(folder / "models", download)
        combiner = LocalCombiner(
            combiner_id,
            registry,
            CombinerRoundRunner(combiner_id, registry, cache, folder / "updates"),
            cache,
        )
        self.combiners.append(combiner)
        return combiner

    def add_client(self, combiner: LocalCombiner, index: int, behaviour: Behaviour) -> None:
        """Connect a client now; it starts answering tasks inside `run`."""
        client = combiner.registry.connect(f"client-{index}")
        self._assigned.setdefault(combiner.combiner_id, set()).add(client.client_id)
        signer = "another client" if behaviour is Behaviour.BAD_RECEIPT else client.client_id
        key = self.receipts.key_for(signer)
        self._pending.append((combiner, client.client_id, client.tasks, index, behaviour, key))

    def run(self, work: Coroutine[object, object, T]) -> T:
        """Run ``work`` in a fresh event loop with every client answering its tasks."""

        async def main() -> T:
            clients = [asyncio.ensure_future(_serve(*pending)) for pending in self._pending]
            try:
                return await work
            finally:
                for client in clients:
                    client.cancel()
                await asyncio.gather(*clients, return_exceptions=True)

        return asyncio.run(main())

    def close(self) -> None:
        self.store.close()


async def _serve(
    combiner: LocalCombiner,
    client_id: str,
    tasks: asyncio.Queue[pb.Task | None],
    index: int,
    behaviour: Behaviour,
    key: bytes,
) -> None:
    """One client: answer each task the way ``behaviour`` says, with its receipt."""
    rounds = combiner.rounds

    def receipt(task: pb.Task, num_examples: int, metrics: dict[str, float]) -> bytes:
        kind = "train" if task.kind == pb.TRAIN else "validate"
        said = Statement(
            task.round_id, kind, client_id, combiner.combiner_id, num_examples, metrics
        )
        return make_receipt(key, said)

    while (task := await tasks.get()) is not None:
        if behaviour is Behaviour.SILENT:
            continue
        if behaviour is Behaviour.DROPS:
            rounds.client_left(client_id)
            continue
        if behaviour is Behaviour.FAILS:
            rounds.accept_failure(
                pb.TaskFailure(task_id=task.task_id, reason="ValueError: no"), Caller(client_id)
            )
            continue
        path = combiner.cache.cached_path(task.model_id)
        assert path is not None, "a task's model is cached before the task is sent"
        params = copy_params_from_file(path)
        if task.kind == pb.VALIDATE:
            metrics = {"accuracy": index / 4, "num_examples": 10.0 * (index + 1)}
            report = pb.ValidationReport(
                task_id=task.task_id,
                client_id=client_id,
                metrics=metrics,
                receipt=receipt(task, 0, metrics),
            )
            rounds.accept_validation(report, Caller(client_id))
            continue
        value = np.nan if behaviour is Behaviour.NAN else index + 1.0
        trained = {name: (array + value).astype(array.dtype) for name, array in params.items()}
        header = pb.UpdateHeader(
            task_id=task.task_id,
            client_id=client_id,
            num_examples=10 * (index + 1),
            metrics={"train_loss": 0.5},
            model=header_to_proto(task.model_id, specs_of(trained)),
            receipt=receipt(task, 10 * (index + 1), {"train_loss": 0.5}),
        )
        messages = send_model(pb.UpdateChunk, header, params_chunks(trained))
        incoming = await receive_model(aiter_of(messages), "an update")  # type: ignore[arg-type]
        await rounds.accept_update(incoming, Caller(client_id))


def stored_params(models: ModelStore, model_id: str | None) -> dict[str, np.ndarray]:
    """A stored model's arrays, read through the store as the tiers read it."""
    assert model_id is not None
    with models.open(model_id) as stream:
        return copy_params_from_stream(stream)[0]
