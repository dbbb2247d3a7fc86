"""One round, as the controller runs it, returned as a value.

Wait for enough clients, split the quota over the online combiners, run the round on each
(their partials are reduced as they arrive), publish the new model to the trail, then ask
every client to validate it. The round returns a `RoundReport`: the record to store, the
events worth keeping and the optimiser's next state. It writes nothing to the state store
itself (the session loop records the report once); it touches only the model trail, and
discovery when a combiner turns out to be gone. Its start is announced as it happens
(``announce``: the session loop records it, so a live view shows the round in flight).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stratafl.aggregate import Aggregator, ServerOptState
from stratafl.compression import parse_partial_updates
from stratafl.controller.link import CombinerAnswer, CombinerLink, RoundTask
from stratafl.controller.reducer import Reducer
from stratafl.controller.tally import check_partial, split_quota, summarize_validation
from stratafl.controller.trail import ModelTrail
from stratafl.errors import StrataError, UnavailableError
from stratafl.params import TensorSpec, specs_of, total_bytes
from stratafl.records import RoundRecord, Traffic
from stratafl.settings import SessionConfig
from stratafl.status import OutcomeStatus, RoundStatus, TaskKind


class Federation(Protocol):
    """What a round needs to know about who is there (discovery and its links)."""

    def online(self) -> list[CombinerLink]: ...

    async def mark_offline(self, combiner_id: str, reason: str) -> None: ...

    async def wait_for_clients(self, count: int, timeout: float) -> int: ...


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
    ) -> RoundReport:
        """Round ``number`` from ``model_in``; a failed round is a report, not an exception."""
        started_wall, started = time.time(), time.monotonic()
        events: list[Event] = []
        await self._federation.wait_for_clients(config.min_clients, config.wait_for_clients_seconds)
        counts = await self._client_counts(events)
        connected = sum(counts.values())
        wanted = config.clients_wanted(connected)
        quotas = {k: v for k, v in split_quota(wanted, counts).items() if v > 0}
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
        task = RoundTask(
            session_id=session_id,
            number=number,
            kind=TaskKind.TRAIN,
            model_id=model_in,
            timeout=config.round_timeout,
            config=config.task_config(number, participation=min(1.0, wanted / max(1, connected))),
            aggregator=config.aggregator,
            seed=config.round_seed(number),
            max_examples_per_client=config.max_examples_per_client,
            compression=config.compression,
            partial_updates=config.partial_updates,
        )
        reducer = Reducer(aggregator, reference)
        reasons: list[str] = []
        try:
            answers = await self._fan_out(task, quotas, specs_of(reference), reducer, events)
            train_seconds = time.monotonic() - started
            reasons += [f"{e.kind.replace('_', ' ')}: {e.message}" for e in events]
            reasons += [
                f"combiner {a.combiner_id} has no partial: {a.error}" for a in answers if a.error
            ]
            record = RoundRecord(
                session_id=session_id,
                number=number,
                status=RoundStatus.FAILED,
                model_in=model_in,
                started_at=started_wall,
                duration=0.0,
                outcomes=[o for a in answers for o in a.outcomes],
                timings={"train": train_seconds},
                traffic=Traffic(model_bytes=total_bytes(specs_of(reference))),
            )
            contributors = sum(a.contributors for a in answers if not a.error)
            if contributors < config.min_clients:
                reasons.append(
                    f"only {contributors} of the {wanted} clients asked returned a usable "
                    f"update; min_clients is {config.min_clients}"
                )
                return self._report(record, answers, reasons, started, state, events)
            try:
                params, state = await asyncio.to_thread(reducer.result, state)
            except StrataError as exc:
                reasons.append(f"the partials could not be merged: {exc}")
                return self._report(record, answers, reasons, started, state, events)
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
        timings = {
            **record.timings,
            "reduce": merged_at - started - train_seconds,
            "store": time.monotonic() - merged_at,
        }
        record = record.model_copy(
            update={"status": RoundStatus.FINISHED, "model_out": model.id, "timings": timings}
        )
        if config.validate_each_round:
            validation = await self._validate(task, model.id, events)
            answers += validation
            record = record.model_copy(
                update={
                    "validation": summarize_validation([o for a in validation for o in a.outcomes])
                }
            )
        return self._report(record, answers, reasons, started, state, events)

    async def _client_counts(self, events: list[Event]) -> dict[str, int]:
        async def count(link: CombinerLink) -> tuple[str, int | None]:
            try:
                return link.combiner_id, await link.client_count()
            except UnavailableError as exc:
                await self._federation.mark_offline(link.combiner_id, str(exc))
                events.append(Event("combiner_failed", link.combiner_id, str(exc)))
                return link.combiner_id, None

        results = await asyncio.gather(*(count(link) for link in self._federation.online()))
        return {cid: n for cid, n in results if n is not None}

    async def _fan_out(
        self,
        task: RoundTask,
        quotas: dict[str, int],
        expect: list[TensorSpec],
        reducer: Reducer | None,
        events: list[Event],
    ) -> list[CombinerAnswer]:
        """Ask each combiner in ``quotas``; collect each partial as soon as it arrives."""
        links = {link.combiner_id: link for link in self._federation.online()}
        self._staging.mkdir(parents=True, exist_ok=True)
        partial_updates = parse_partial_updates(task.partial_updates).random

        async def one(link: CombinerLink, quota: int) -> CombinerAnswer | None:
            try:
                answer = await link.run_round(task, quota, self._staging, expect)
                if answer.partial is not None and reducer is not None:
                    try:
                        check_partial(answer, partial_updates=partial_updates)
                    except StrataError:
                        answer.partial.unlink(missing_ok=True)
                        raise
                    await reducer.add(answer.partial, answer.total_weight, answer.tensor_weights)
                return answer
            except UnavailableError as exc:
                await self._federation.mark_offline(link.combiner_id, str(exc))
                events.append(Event("combiner_failed", link.combiner_id, str(exc)))
            except StrataError as exc:  # a malformed or poisoned partial
                events.append(Event("partial_rejected", link.combiner_id, str(exc)))
            return None

        answers = await asyncio.gather(
            *(one(links[cid], quota) for cid, quota in quotas.items() if cid in links)
        )
        return [a for a in answers if a is not None]

    async def _validate(
        self, train: RoundTask, model_id: str, events: list[Event]
    ) -> list[CombinerAnswer]:
        """Ask every connected client to score ``model_id``; their outcomes carry the metrics."""
        task = RoundTask(
            session_id=train.session_id,
            number=train.number,
            kind=TaskKind.VALIDATE,
            model_id=model_id,
            timeout=train.timeout,
            config={"round": train.number},
        )
        quotas = {link.combiner_id: 0 for link in self._federation.online()}
        return await self._fan_out(task, quotas, [], None, events)

    def _report(
        self,
        record: RoundRecord,
        answers: list[CombinerAnswer],
        reasons: list[str],
        started: float,
        state: ServerOptState,
        events: list[Event],
    ) -> RoundReport:
        """The round's record, with its traffic on both links and the reasons it gives."""
        everything = [o for a in answers for o in a.outcomes]
        traffic = Traffic(
            clients_up=sum(o.bytes_up for o in everything),
            clients_down=sum(o.bytes_down for o in everything),
            combiners_up=sum(a.wire_bytes for a in answers),
            combiners_down=sum(a.model_bytes_down for a in answers),
            updates_raw=record.traffic.model_bytes * sum(o.bytes_up > 0 for o in everything),
            model_bytes=record.traffic.model_bytes,
        )
        finished = record.status == RoundStatus.FINISHED
        record = record.model_copy(
            update={
                "reason": "; ".join(reasons),
                "traffic": traffic,
                "duration": time.monotonic() - started,
                "participants": [
                    o.client_id for o in record.outcomes if o.status == OutcomeStatus.OK
                ],
                "timings": {**record.timings, "total": time.monotonic() - started}
                if finished
                else record.timings,
            }
        )
        return RoundReport(record, state, events)
