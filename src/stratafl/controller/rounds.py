"""One round, as the controller runs it, returned as a value.

Wait for enough clients, pick the round's clients (the controller's own choice: from the
clients it assigned to each combiner that the combiner says are connected, reproducibly
from the session's seed), run the round on each combiner with its list and a fresh
random round id (their partials are reduced as they arrive, counting only outcomes whose
receipts verify), publish the new model to the trail, then ask every client to validate
it. The round returns a `RoundReport`: the record to store, the events worth keeping and
the optimiser's next state. It writes nothing to the state store itself (the session loop
records the report once); it touches only the model trail, and discovery when a combiner
turns out to be gone. Its start is announced as it happens (``announce``: the session loop
records it, so a live view shows the round in flight).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stratafl.aggregate import Aggregator, ServerOptState
from stratafl.aggregate.partial_check import MIN_PARTIALS, outlying_partials
from stratafl.controller.link import CombinerAnswer, CombinerLink, RoundTask
from stratafl.controller.reducer import Reducer
from stratafl.controller.tally import (
    check_partial,
    select_clients,
    split_quota,
    summarize_validation,
    verify_outcomes,
)
from stratafl.controller.trail import ModelTrail
from stratafl.errors import StrataError, UnavailableError
from stratafl.modelfile.codec import MappedModelFile
from stratafl.params import TensorSpec, specs_of, total_bytes
from stratafl.records import RoundRecord, Traffic, Validation
from stratafl.security.receipts import ReceiptKeys
from stratafl.settings import AppSettingValue, RoundSettings, SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, TaskKind


class Federation(Protocol):
    """What a round needs to know about who is there (discovery and its links)."""

    def online(self) -> list[CombinerLink]: ...

    async def mark_offline(self, combiner_id: str, reason: str) -> None: ...

    async def even_load(self) -> None:
        """Move clients between combiners so each holds its share (no task in flight)."""
        ...

    async def wait_for_clients(self, count: int, timeout: float) -> int: ...

    @property
    def receipts(self) -> ReceiptKeys:
        """The clients' receipt keys: only outcomes whose receipts verify count."""
        ...

    def assigned(self, combiner_id: str) -> frozenset[str]:
        """The clients the controller assigned to ``combiner_id`` (never its own report)."""
        ...


@dataclass(frozen=True)
class Event:
    kind: str
    source: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


Announce = Callable[[str, Event], None]
"""Records an event of the session ``(session_id, event)`` as it happens."""


@dataclass
class RoundReport:
    record: RoundRecord
    state: ServerOptState
    events: list[Event] = field(default_factory=list)


@dataclass
class _RoundLog:
    """What a round has gathered so far; `report` turns it into the round's one record,
    finished or failed, whichever way the round ends."""

    session_id: str
    number: int
    model_in: str
    model_bytes: int
    started_wall: float
    started: float
    trained: list[CombinerAnswer] = field(default_factory=list)
    validated: list[CombinerAnswer] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def report(
        self,
        state: ServerOptState,
        *,
        model_out: str | None = None,
        validation: Validation | None = None,
    ) -> RoundReport:
        """The round's record: finished if it published ``model_out``, failed otherwise
        (with its reasons); its traffic counts both links, validation included."""
        finished = model_out is not None
        outcomes = [o for a in self.trained for o in a.outcomes]
        answers = self.trained + self.validated
        everything = [o for a in answers for o in a.outcomes]
        duration = time.monotonic() - self.started
        record = RoundRecord(
            session_id=self.session_id,
            number=self.number,
            status=RoundStatus.FINISHED if finished else RoundStatus.FAILED,
            model_in=self.model_in,
            model_out=model_out,
            started_at=self.started_wall,
            duration=duration,
            reason="; ".join(self.reasons),
            participants=[o.client_id for o in outcomes if o.status == OutcomeStatus.OK],
            outcomes=outcomes,
            timings={**self.timings, "total": duration} if finished else dict(self.timings),
            traffic=Traffic(
                clients_up=sum(o.bytes_up for o in everything),
                clients_down=sum(o.bytes_down for o in everything),
                combiners_up=sum(a.wire_bytes for a in answers),
                combiners_down=sum(a.model_bytes_down for a in answers),
                updates_raw=self.model_bytes * sum(o.bytes_up > 0 for o in everything),
                model_bytes=self.model_bytes,
            ),
            validation=Validation() if validation is None else validation,
        )
        return RoundReport(record, state, self.events)


class GlobalRoundRunner:
    """Runs rounds over a federation; constructing it does no I/O."""

    def __init__(
        self,
        federation: Federation,
        trail: ModelTrail,
        staging: Path,
        announce: Announce | None = None,
    ) -> None:
        self._federation = federation
        self._trail = trail
        self._staging = staging
        self._announce = announce

    async def run(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        number: int,
        model_in: str,
        state: ServerOptState,
        *,
        weight_cap: int = 0,
    ) -> RoundReport:
        """Round ``number`` from ``model_in``; a failed round is a report, not an exception.
        Updates weigh at most ``weight_cap`` (0: each combiner caps by its own claims,
        `SessionConfig.round_settings`)."""
        started_wall, started = time.time(), time.monotonic()
        events: list[Event] = []
        await self._federation.even_load()
        await self._federation.wait_for_clients(config.min_clients, config.wait_for_clients_seconds)
        eligible = await self._eligible(events)
        connected = sum(len(ids) for ids in eligible.values())
        wanted = config.clients_wanted(connected)
        counts = {k: len(ids) for k, ids in eligible.items()}
        quotas = {k: v for k, v in split_quota(wanted, counts).items() if v > 0}
        selected = select_clients(eligible, quotas, config.round_seed(number))
        if self._announce is not None:
            started_event = Event(
                "round_started",
                "controller",
                f"session {session_id} round {number}: {wanted} clients asked",
                {
                    "round": number,
                    "clients_selected": wanted,
                    "clients_connected": connected,
                    "quotas": quotas,
                },
            )
            self._announce(session_id, started_event)
        reference = await self._trail.load(model_in)
        log = _RoundLog(
            session_id,
            number,
            model_in,
            total_bytes(specs_of(reference)),
            started_wall,
            started,
            events=events,
        )
        task = RoundTask(
            session_id=session_id,
            number=number,
            kind=TaskKind.TRAIN,
            model_id=model_in,
            timeout=config.round_timeout,
            config=config.task_config(number, participation=min(1.0, wanted / max(1, connected))),
            seed=config.round_seed(number),
            settings=config.round_settings(weight_cap=weight_cap),
            quorum=config.quorum,
            round_id=secrets.token_hex(16),
        )
        reducer = Reducer(aggregator, reference)
        try:
            log.trained = await self._fan_out(
                task,
                selected,
                specs_of(reference),
                reducer,
                events,
                partial_check=config.partial_check_ratio,
            )
            train_seconds = time.monotonic() - started
            log.timings["train"] = train_seconds
            log.reasons += [f"{e.kind.replace('_', ' ')}: {e.message}" for e in events]
            log.reasons += [
                f"combiner {a.combiner_id} has no partial: {a.error}"
                for a in log.trained
                if a.error
            ]
            contributors = sum(a.contributors for a in log.trained if not a.error)
            if contributors < config.min_clients:
                log.reasons.append(
                    f"only {contributors} of the {wanted} clients asked returned a usable "
                    f"update; min_clients is {config.min_clients}"
                )
                return log.report(state)
            try:
                params, state = await asyncio.to_thread(reducer.result, state)
            except StrataError as exc:
                log.reasons.append(f"the partials could not be merged: {exc}")
                return log.report(state)
        finally:  # whatever the outcome, no spooled partial outlives its round
            reducer.discard()
        merged_at = time.monotonic()
        model = await self._trail.publish(
            params,
            parent_id=model_in,
            session_id=session_id,
            round_number=number,
            aggregator=aggregator,
            state=state,
        )
        log.timings["reduce"] = merged_at - started - train_seconds
        log.timings["store"] = time.monotonic() - merged_at
        if not config.validate_each_round:
            return log.report(state, model_out=model.id)
        validating = config.validation_config(number)
        log.validated = await self._validate(task, model.id, validating, events)
        validation = summarize_validation([o for a in log.validated for o in a.outcomes])
        return log.report(state, model_out=model.id, validation=validation)

    async def _eligible(self, events: list[Event]) -> dict[str, list[str]]:
        """Each online combiner's clients that may take part: those the controller assigned
        to it that it says are connected now (a combiner can hide a client, never add one)."""

        async def ask(link: CombinerLink) -> tuple[str, list[str] | None]:
            try:
                connected = set(await link.client_ids())
            except UnavailableError as exc:
                await self._federation.mark_offline(link.combiner_id, str(exc))
                events.append(Event("combiner_failed", link.combiner_id, str(exc)))
                return link.combiner_id, None
            return link.combiner_id, sorted(connected & self._federation.assigned(link.combiner_id))

        results = await asyncio.gather(*(ask(link) for link in self._federation.online()))
        return {cid: ids for cid, ids in results if ids is not None}

    async def _fan_out(
        self,
        task: RoundTask,
        selected: dict[str, list[str]],
        expect: list[TensorSpec],
        reducer: Reducer | None,
        events: list[Event],
        *,
        partial_check: float = 0.0,
    ) -> list[CombinerAnswer]:
        """Ask each combiner in ``selected`` to run ``task`` on its selected clients;
        verify each answer's outcomes, and collect each partial as soon as it arrives, or,
        when the partials are checked against each other (``partial_check``, a ratio:
        `stratafl.aggregate.partial_check`), once all have arrived and passed. A partial
        that verified outcomes do not back, or that the check refuses, is left out (its
        outcomes are kept, marked rejected)."""
        links = {link.combiner_id: link for link in self._federation.online()}
        self._staging.mkdir(parents=True, exist_ok=True)
        settings = task.settings
        counted: set[str] = set()  # each client counts once per round, federation-wide
        # Partials of partial updates hold different tensors: no common median to check.
        staged = (
            partial_check > 0
            and len(selected) >= MIN_PARTIALS
            and not settings.partial_updates.random
        )

        async def one(link: CombinerLink, clients: list[str]) -> CombinerAnswer | None:
            try:
                answer = await link.run_round(task, clients, self._staging, expect)
                verify_outcomes(
                    answer,
                    selected=clients,
                    round_id=task.round_id,
                    kind=task.kind,
                    keys=self._federation.receipts,
                    counted=counted,
                )
                if answer.partial is None:  # no partial: nobody contributed to the model
                    answer.contributors = 0
                elif reducer is not None:
                    try:
                        check_partial(
                            answer,
                            partial_updates=settings.partial_updates.random,
                            weight_cap=settings.weight_cap,
                            median_cap_ratio=settings.median_cap_ratio,
                        )
                    except StrataError as exc:
                        answer.partial.unlink(missing_ok=True)
                        answer.partial, answer.contributors = None, 0
                        events.append(Event("partial_rejected", link.combiner_id, str(exc)))
                        _left_out(answer, f"its combiner's partial was left out: {exc}")
                        return answer
                    if not staged:
                        await reducer.add(
                            answer.partial, answer.total_weight, answer.tensor_weights
                        )
                return answer
            except UnavailableError as exc:
                await self._federation.mark_offline(link.combiner_id, str(exc))
                events.append(Event("combiner_failed", link.combiner_id, str(exc)))
            except StrataError as exc:  # a malformed or poisoned partial
                events.append(Event("partial_rejected", link.combiner_id, str(exc)))
            return None

        gathered = await asyncio.gather(
            *(one(links[cid], clients) for cid, clients in selected.items() if cid in links)
        )
        answers = [a for a in gathered if a is not None]
        if staged and reducer is not None:
            answers = await self._check_partials(answers, expect, reducer, partial_check, events)
        return answers

    async def _check_partials(
        self,
        answers: list[CombinerAnswer],
        expect: list[TensorSpec],
        reducer: Reducer,
        ratio: float,
        events: list[Event],
    ) -> list[CombinerAnswer]:
        """Refuse the staged partials far from the others, then collect the rest; a refused
        partial is a ``partial_rejected`` event and its outcomes are marked left out, as
        for any partial refused on arrival."""
        staged = [a for a in answers if a.partial is not None]
        refused: dict[str, str] = {}
        try:
            files = [MappedModelFile(a.partial) for a in staged if a.partial is not None]
            far = await asyncio.to_thread(outlying_partials, files, expect, ratio)
            refused = {staged[index].combiner_id: why for index, why in far.items()}
            for answer in staged:
                assert answer.partial is not None
                if answer.combiner_id not in refused:
                    try:
                        await reducer.add(
                            answer.partial, answer.total_weight, answer.tensor_weights
                        )
                    except StrataError as exc:  # a poisoned partial (NaN, ...)
                        refused[answer.combiner_id] = str(exc)
                    answer.partial = None  # the reducer owns the file (or deleted it)
        finally:  # refused partials, and any left if the check failed, leave no file
            for answer in staged:
                if answer.partial is not None:
                    answer.partial.unlink(missing_ok=True)
        for answer in answers:
            why = refused.get(answer.combiner_id)
            if why is not None:
                events.append(Event("partial_rejected", answer.combiner_id, why))
                answer.contributors = 0
                _left_out(answer, f"its combiner's partial was left out: {why}")
        return answers

    async def _validate(
        self,
        train: RoundTask,
        model_id: str,
        config: Mapping[str, AppSettingValue],
        events: list[Event],
    ) -> list[CombinerAnswer]:
        """Ask every connected client to score ``model_id``; their outcomes carry the metrics."""
        task = RoundTask(
            session_id=train.session_id,
            number=train.number,
            kind=TaskKind.VALIDATE,
            model_id=model_id,
            timeout=train.timeout,
            config=config,
            settings=RoundSettings(app=train.settings.app),  # clients score with the same app
            quorum=train.quorum,
            round_id=secrets.token_hex(16),
        )
        eligible = {cid: ids for cid, ids in (await self._eligible(events)).items() if ids}
        return await self._fan_out(task, eligible, [], None, events)


def _left_out(answer: CombinerAnswer, reason: str) -> None:
    """Mark ``answer``'s ok outcomes rejected: their updates reached no model."""
    answer.outcomes = [
        o.model_copy(update={"status": OutcomeStatus.REJECTED, "reason": reason[:2000]})
        if o.status == OutcomeStatus.OK
        else o
        for o in answer.outcomes
    ]
