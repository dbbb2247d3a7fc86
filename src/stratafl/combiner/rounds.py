"""One round as a combiner sees it: tasks out, outcomes in, a partial result at the end."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stratafl.collect.collector import Collector
from stratafl.collect.decoding import decode_staged
from stratafl.compression import sent_tensors, update_layout
from stratafl.errors import ModelFormatError
from stratafl.params import TensorSpec
from stratafl.proto import stratafl_pb2 as pb
from stratafl.settings import RoundSettings
from stratafl.status import OutcomeStatus
from stratafl.transport.outcomes import outcome_to_proto
from stratafl.transport.streams import specs_from_proto


@dataclass
class Outcome:
    """What became of one client's task in this round."""

    client_id: str
    status: OutcomeStatus = OutcomeStatus.PENDING
    reason: str = ""
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    left_out: str = ""
    """Why the rule left this (accepted) update out of the partial; empty if it counted."""
    receipt: bytes = b""
    """The client's receipt, relayed to the controller unchanged (only it can check it)."""

    def add_bytes_up(self, size: int) -> None:
        self.bytes_up += size

    def to_proto(self) -> pb.ClientOutcome:
        return pb.ClientOutcome(
            client_id=self.client_id,
            status=outcome_to_proto(self.status),
            reason=self.reason,
            num_examples=self.num_examples,
            metrics=self.metrics,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            seconds=self.seconds,
            left_out=self.left_out,
            receipt=self.receipt,
        )


class RoundState:
    """The tasks of one round and their outcomes; ``done`` fires when none is pending."""

    def __init__(
        self,
        spec: pb.RoundSpec,
        settings: RoundSettings,
        specs: list[TensorSpec],
        collector: Collector | None,
        reference: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        """The session's codec, partial updates and example cap, parsed once (`settings_of`)."""
        self.specs = specs
        self.reference = reference
        """The round's global model: compressed updates are decoded against it."""
        self.layout = update_layout(specs, settings.compression)
        """What a full update's header must announce: checked before a byte is staged."""
        self.collector = collector  # None for validation rounds
        self.collect_lock = asyncio.Lock()
        self.outcomes: dict[str, Outcome] = {}
        self.done = asyncio.Event()
        self.quorum_met = asyncio.Event()
        """Fires once ``spec.quorum`` tasks have an answer (never with no quorum)."""
        self._answered = 0
        self.closed = False
        self.arriving: set[str] = set()
        """Tasks whose update is being received or collected: one at a time, and its
        outcome is the update's, whatever else the client reports meanwhile."""

    def announced(self, header: pb.ModelHeader) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The model tensors an update whose header announces ``header`` carries, and the
        layout it must have: every tensor unless the session sends partial updates. Raises
        `ModelFormatError` for a partial update that is empty, repeats or invents a tensor,
        or sends one only in part."""
        compression = self.settings.compression
        if not self.settings.partial_updates.random:
            return self.specs, self.layout
        sent = sent_tensors(specs_from_proto(header), self.specs, compression)
        return sent, update_layout(sent, compression)

    async def decode(self, staged: Path, sent: list[TensorSpec]) -> None:
        """Rewrite a compressed update staged at ``staged``, which carries the tensors
        ``sent``, as the plain tensors it encodes (in a worker thread; a raw one is left as
        it is, without a thread hop)."""
        compression = self.settings.compression
        if not compression.is_delta:
            return
        if self.reference is None:
            raise ModelFormatError("this round takes no updates: it has no global model")
        args = (staged, self.reference, sent, compression)
        await asyncio.to_thread(decode_staged, *args)

    def add_task(self, task_id: str, client_id: str) -> None:
        self.outcomes[task_id] = Outcome(client_id)

    def task_ids(self) -> list[str]:
        return list(self.outcomes)

    def outcome(self, task_id: str) -> Outcome:
        return self.outcomes[task_id]

    def is_pending(self, task_id: str) -> bool:
        outcome = self.outcomes.get(task_id)
        return outcome is not None and outcome.status == OutcomeStatus.PENDING and not self.closed

    def resolve(
        self,
        task_id: str,
        status: OutcomeStatus,
        reason: str = "",
        *,
        num_examples: int = 0,
        metrics: dict[str, float] | None = None,
        receipt: bytes = b"",
    ) -> None:
        outcome = self.outcomes[task_id]
        if outcome.status != OutcomeStatus.PENDING:
            return
        outcome.status, outcome.reason = status, reason
        outcome.seconds = time.monotonic() - outcome.started
        outcome.num_examples = num_examples
        if metrics is not None:
            outcome.metrics = metrics
        self._answered += 1
        if 0 < self.spec.quorum <= self._answered:
            self.quorum_met.set()
        outcome.receipt = receipt
        if all(o.status != OutcomeStatus.PENDING for o in self.outcomes.values()):
            self.done.set()

    def resolve_client(self, client_id: str, status: OutcomeStatus, reason: str) -> None:
        for task_id, outcome in self.outcomes.items():
            if outcome.client_id == client_id and task_id not in self.arriving:
                self.resolve(task_id, status, reason)

    def close(self, reason: str = "") -> None:
        """Mark whatever is still pending as timed out, for ``reason`` (default: the round's
        timeout passed); late uploads are refused after this."""
        reason = reason or f"no answer within {self.spec.timeout_seconds:g} s"
        for task_id in self.outcomes:
            self.resolve(task_id, OutcomeStatus.TIMEOUT, reason)
        self.closed = True

    def note_left_out(self, left_out: Mapping[str, str]) -> None:
        """Record why the rule left out these tasks' accepted updates (task id -> why)."""
        for task_id, why in left_out.items():
            if task_id in self.outcomes:
                self.outcomes[task_id].left_out = why

    def contributors(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == OutcomeStatus.OK)


QUORUM_GRACE_FLOOR_SECONDS = 10.0
"""The least a round waits for its stragglers once its quorum answered: honest clients a
little slower than the others still count."""
CLOSED_AT_QUORUM = "the round closed at its quorum"


async def wait_for_quorum(
    state: RoundState, timeout: float, *, grace_floor: float = QUORUM_GRACE_FLOOR_SECONDS
) -> bool:
    """Wait until every task of ``state`` has an answer, or ``timeout`` s passed, or, once
    ``spec.quorum`` tasks answered (any outcome), a grace of max(``grace_floor``, the time
    the quorum took) passed, never past the timeout: a client that takes its task and never
    answers costs the round the grace, not its timeout (Bonawitz et al. 2019 close a round
    of devices the same way). True when the round closes at its quorum with tasks still
    pending; the caller closes the round either way."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    until = deadline
    if 0 < state.spec.quorum < len(state.outcomes):
        if not await _wait(state.quorum_met, deadline - loop.time()):
            return False
        now = loop.time()
        until = min(deadline, now + max(grace_floor, now - started))
    await _wait(state.done, until - loop.time())
    return not state.done.is_set() and until < deadline


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` fires within ``seconds``."""
    if event.is_set() or seconds <= 0:
        return event.is_set()
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


def settings_of(spec: pb.RoundSpec) -> RoundSettings:
    """The round's settings, parsed once at RunRound and handed to every part of the round:
    a `ConfigError` (an unknown rule, a bad codec, partial updates with a rule that cannot
    take them) fails the round before any task goes out."""
    wire = spec.settings
    return RoundSettings.parse(
        aggregator=wire.aggregator,
        compression=wire.compression,
        partial_updates=wire.partial_updates,
        max_examples_per_client=wire.max_examples_per_client,
        weight_cap=wire.weight_cap,
        median_cap_ratio=wire.median_cap_ratio,
        app_sha256=wire.app.sha256,
        app_entry=wire.app.entry,
    )


def collector_for(
    spec: pb.RoundSpec,
    settings: RoundSettings,
    combiner_id: str,
    reference: Mapping[str, np.ndarray],
) -> Collector | None:
    """What collects a round's updates at ``combiner_id`` (None: a validation round takes
    none): the session's rule as this combiner runs it this round, each update weighing its
    claim capped as the round's settings say (`stratafl.aggregate.weights`)."""
    if spec.kind != pb.TRAIN:
        return None
    rule = settings.aggregator.rule.for_round(spec.round, zlib.crc32(combiner_id.encode()))
    return Collector.for_updates(
        rule,
        reference,
        partial=settings.partial_updates.random,
        weight_cap=settings.weight_cap,
        median_cap_ratio=settings.median_cap_ratio,
    )
