"""The controller's link to its combiners: one typed handle per combiner.

Everything the controller says to a combiner goes through `CombinerLink`: RPC errors are
mapped to domain errors here and nowhere else (`UnavailableError` for a combiner that
cannot be reached, `ModelFormatError` for a malformed partial), and each answer carries
the bytes its own stream cost, so no shared counter is raced by concurrent partials.
The round logic sees only this protocol, so tests drive it with in-process links.
`CombinerLinks` is the federation a round sees; the round runner asks it to even the load
over the combiners (`controller.balance`) before it waits for clients.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio

from stratafl.controller.balance import Rebalancer
from stratafl.controller.discovery import Discovery
from stratafl.controller.sent_models import SentModels
from stratafl.errors import ModelFormatError, UnavailableError
from stratafl.params import TensorSpec
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.records import ClientOutcome
from stratafl.security import TokenSigner
from stratafl.security.grants import Grant, sign_grant
from stratafl.security.receipts import ReceiptKeys
from stratafl.settings import RoundSettings, quorum_count
from stratafl.status import TaskKind
from stratafl.transport.channels import open_aio_channel
from stratafl.transport.outcomes import outcome_from_proto
from stratafl.transport.streams import receive_model

RPC_MARGIN_SECONDS = 30.0
"""How long past its own round timeout a combiner may take to answer."""
STATUS_TIMEOUT_SECONDS = 5.0

_KIND_TO_PROTO = {TaskKind.TRAIN: pb.TRAIN, TaskKind.VALIDATE: pb.VALIDATE}


@dataclass(frozen=True)
class RoundTask:
    """What the controller asks of every combiner in one round."""

    session_id: str
    number: int
    kind: TaskKind
    model_id: str
    timeout: float
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    settings: RoundSettings = field(default_factory=RoundSettings)
    """The session's rule, codec, partial updates and example cap, typed; a validation
    round carries the defaults."""
    quorum: float = 1.0
    """The session's quorum, a share of each combiner's selected clients (1.0: wait for all;
    `quorum_count`)."""
    round_id: str = ""
    """Random per attempt: the clients' receipts name it, so none is replayed."""


@dataclass
class CombinerAnswer:
    """One combiner's answer to one round."""

    combiner_id: str
    contributors: int = 0
    total_weight: float = 0.0
    tensor_weights: dict[str, float] = field(default_factory=dict)
    """Each tensor of a partial made of partial updates -> its weight sum (the partial holds
    exactly these tensors); empty: the partial holds every tensor, at ``total_weight``."""
    outcomes: list[ClientOutcome] = field(default_factory=list)
    receipts: list[bytes] = field(default_factory=list)
    """Each outcome's receipt as the combiner relayed it (same order as ``outcomes``)."""
    error: str = ""
    """Why there is no partial although updates arrived (e.g. too few for the rule)."""
    partial: Path | None = None
    """The staged partial; the caller owns the file from here on."""
    wire_bytes: int = 0
    """What the answer's stream cost on the link (header and partial)."""
    model_bytes_down: int = 0
    """What the combiner fetched from the controller to serve this round."""


class CombinerLink(Protocol):
    """A handle on one combiner, as the round logic uses it."""

    @property
    def combiner_id(self) -> str: ...

    async def client_ids(self) -> list[str]:
        """The clients it says are connected now; raises `UnavailableError`."""
        ...

    async def run_round(
        self, task: RoundTask, clients: Sequence[str], staging: Path, expect: Sequence[TensorSpec]
    ) -> CombinerAnswer:
        """Run ``task`` on exactly ``clients`` (the controller's selection); a partial is
        staged under ``staging`` and checked against ``expect``. Raises `UnavailableError`
        or `ModelFormatError`."""
        ...


class GrpcCombinerLink:
    """A combiner reached over gRPC."""

    def __init__(
        self,
        combiner_id: str,
        channel: grpc.aio.Channel,
        receipts: ReceiptKeys,
        sent_models: SentModels | None = None,
        signer: TokenSigner | None = None,
    ) -> None:
        self._combiner_id = combiner_id
        self._stub = pb_grpc.CombinerStub(channel)
        self._receipts = receipts
        """Gives each round's spec its clients' public keys (the combiner checks receipts)."""
        self._sent_models = sent_models
        self._signer = signer

    @property
    def combiner_id(self) -> str:
        return self._combiner_id

    async def client_ids(self) -> list[str]:
        try:
            reply = await self._stub.GetStatus(pb.StatusRequest(), timeout=STATUS_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable("status", exc) from exc
        return list(reply.client_ids)

    async def run_round(
        self, task: RoundTask, clients: Sequence[str], staging: Path, expect: Sequence[TensorSpec]
    ) -> CombinerAnswer:
        if self._sent_models is not None:  # before the combiner can ask for it
            self._sent_models.record(self._combiner_id, task.model_id)
        spec = round_spec(task, clients, self._receipts)
        if self._signer is not None:  # clients do the round's tasks only with this grant
            expires = time.time() + task.timeout + RPC_MARGIN_SECONDS
            spec.grant = sign_grant(self._signer, grant_of(spec, self._combiner_id, expires))
        call = self._stub.RunRound(spec, timeout=task.timeout + RPC_MARGIN_SECONDS)
        try:
            return await read_answer(call, self._combiner_id, staging, expect)
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable(f"round {task.number}", exc) from exc

    async def move_clients(self, client_ids: Sequence[str]) -> list[str]:
        """Ask the combiner to end these clients' streams (it keeps any with a task in
        flight); returns the ids it let go."""
        try:
            reply = await self._stub.MoveClients(
                pb.MoveRequest(client_ids=list(client_ids)), timeout=STATUS_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            raise self._unavailable("move clients", exc) from exc
        wanted = set(client_ids)
        return [client_id for client_id in reply.moved if client_id in wanted]

    def _unavailable(self, what: str, exc: grpc.aio.AioRpcError) -> UnavailableError:
        return UnavailableError(
            f"combiner {self._combiner_id} failed ({what}: {exc.code().name}): {exc.details()}"
        )


class CombinerLinks:
    """The federation as a round sees it: links to the combiners discovery says are online
    (one channel per combiner address), and discovery's own answers."""

    def __init__(
        self,
        discovery: Discovery,
        receipts: ReceiptKeys,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        signer: TokenSigner | None = None,
    ) -> None:
        self._discovery = discovery
        self.receipts = receipts
        """The clients' receipt keys: a round counts only outcomes whose receipt verifies."""
        self._credentials = credentials
        self._signer = signer
        """Signs each round's grant (`security.grants`); None on an insecure federation."""
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self.balance = Rebalancer(discovery, self)

    def online(self) -> list[CombinerLink]:
        return list(self._grpc_links())

    def _grpc_links(self) -> list[GrpcCombinerLink]:
        links: list[GrpcCombinerLink] = []
        for entry in self._discovery.online():
            cached = self._channels.get(entry.combiner_id)
            if cached is None or cached[0] != entry.address:
                channel = open_aio_channel(entry.address, credentials=self._credentials)
                cached = (entry.address, channel)
                self._channels[entry.combiner_id] = cached
            links.append(
                GrpcCombinerLink(
                    entry.combiner_id,
                    cached[1],
                    self.receipts,
                    self._discovery.sent_models,
                    self._signer,
                )
            )
        return links

    async def mark_offline(self, combiner_id: str, reason: str) -> None:
        await self._discovery.mark_offline(combiner_id, reason)

    def assigned(self, combiner_id: str) -> frozenset[str]:
        """The clients the controller assigned to ``combiner_id`` (`Discovery.assigned`)."""
        return self._discovery.assigned(combiner_id)

    async def move_clients(self, combiner_id: str, client_ids: Sequence[str]) -> list[str]:
        """Ask ``combiner_id`` to let ``client_ids`` go (see `GrpcCombinerLink.move_clients`);
        nothing moves off a combiner that is not online."""
        for link in self._grpc_links():
            if link.combiner_id == combiner_id:
                return await link.move_clients(client_ids)
        return []

    async def even_load(self) -> None:
        """Move clients off over-loaded combiners and wait until they have connected
        elsewhere (`Rebalancer.before_round`): called between rounds, no task in flight."""
        await self.balance.before_round()

    async def wait_for_clients(self, count: int, timeout: float) -> int:
        """Wait (at most ``timeout`` seconds) for ``count`` connected clients; returns how
        many are connected."""
        return await self._discovery.wait_for_clients(count, timeout)

    async def close(self) -> None:
        await self.balance.close()
        await asyncio.gather(*(channel.close() for _, channel in self._channels.values()))
        self._channels.clear()


def round_spec(task: RoundTask, clients: Sequence[str], receipts: ReceiptKeys) -> pb.RoundSpec:
    """``task`` as the combiner's RunRound receives it, for exactly ``clients``, with its
    quorum (a share of those clients) and their public receipt keys from ``receipts``: the
    combiner folds no update whose receipt fails to verify."""
    return pb.RoundSpec(
        quorum=quorum_count(task.quorum, len(clients)),
        session_id=task.session_id,
        round=task.number,
        kind=_KIND_TO_PROTO[task.kind],
        model_id=task.model_id,
        num_clients=len(clients),
        client_ids=list(clients),
        round_id=task.round_id,
        timeout_seconds=task.timeout,
        config_json=json.dumps(dict(task.config)),
        seed=task.seed,
        settings=settings_to_proto(task.settings),
        receipt_keys=receipts.public_keys(clients),
    )


def grant_of(spec: pb.RoundSpec, combiner_id: str, expires_at: float) -> Grant:
    """The grant of the round ``spec`` for ``combiner_id``, valid until ``expires_at``."""
    return Grant(
        session_id=spec.session_id,
        round=spec.round,
        round_id=spec.round_id,
        kind=spec.kind,
        model_id=spec.model_id,
        combiner_id=combiner_id,
        expires_at=expires_at,
    )


def settings_to_proto(settings: RoundSettings) -> pb.RoundSettings:
    """``settings`` in their canonical text forms, which `RoundSettings.parse` reads back
    into equal values."""
    return pb.RoundSettings(
        aggregator=settings.aggregator.spec,
        max_examples_per_client=settings.max_examples_per_client,
        compression=str(settings.compression),
        partial_updates=str(settings.partial_updates),
        weight_cap=settings.weight_cap,
        median_cap_ratio=settings.median_cap_ratio,
        app=pb.AppRef(sha256=settings.app.sha256, entry=settings.app.entry),
    )


async def read_answer(
    messages: AsyncIterable[pb.RoundResultChunk],
    combiner_id: str,
    staging: Path,
    expect: Sequence[TensorSpec],
) -> CombinerAnswer:
    """A combiner's result stream as an answer, its partial staged under ``staging``."""
    path = staging / f"partial-{uuid.uuid4().hex}.safetensors"
    try:
        incoming = await receive_model(messages, f"the result stream of combiner {combiner_id}")
        header = incoming.header
        answer = CombinerAnswer(
            combiner_id=combiner_id,
            contributors=header.contributors,
            total_weight=header.total_weight,
            tensor_weights=dict(header.tensor_weights),
            outcomes=[_outcome(o, combiner_id) for o in header.outcomes],
            receipts=[bytes(o.receipt) for o in header.outcomes],
            error=header.error,
            model_bytes_down=header.model_bytes_down,
        )
        if not header.error and header.contributors > 0 and header.model.tensors:
            await incoming.save(path, header.model, expect=_held(expect, answer.tensor_weights))
            answer.partial = path
        answer.wire_bytes = incoming.wire_bytes
        return answer
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _held(expect: Sequence[TensorSpec], tensor_weights: Mapping[str, float]) -> list[TensorSpec]:
    """The layout a partial must have: every tensor, or those its tensor weights name."""
    if not tensor_weights:
        return list(expect)
    unknown = sorted(set(tensor_weights) - {spec.name for spec in expect})
    if unknown:
        raise ModelFormatError(f"the partial weighs tensors {unknown[:5]} the model has not")
    return [spec for spec in expect if spec.name in tensor_weights]


def _outcome(outcome: pb.ClientOutcome, combiner_id: str) -> ClientOutcome:
    return ClientOutcome(
        client_id=outcome.client_id,
        combiner_id=combiner_id,
        status=outcome_from_proto(outcome.status),
        reason=outcome.reason,
        num_examples=outcome.num_examples,
        metrics=dict(outcome.metrics),
        bytes_up=outcome.bytes_up,
        bytes_down=outcome.bytes_down,
        seconds=outcome.seconds,
        left_out=outcome.left_out,
    )
