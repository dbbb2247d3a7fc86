"""Sessions and rounds: the controller's loop over the federation.

A round: wait for enough clients, split the quota over the online combiners, run the
round on each (they stream back partials), reduce, store the new model with its parent,
then ask every client to validate it. Everything is recorded in the state store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from stratafl.aggregate import Aggregator, ServerAverage, ServerOptState, parse_aggregator
from stratafl.controller.discovery import CombinerEntry, Discovery
from stratafl.controller.reducer import Reducer
from stratafl.controller.service import TrafficCounter
from stratafl.errors import RoundFailed, StrataError
from stratafl.modelfile import read_params, save_params
from stratafl.params import num_parameters, specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.proto import stratafl_pb2_grpc as pb_grpc
from stratafl.settings import SessionConfig
from stratafl.store.models import ModelStore, new_model_id
from stratafl.store.state import StateStore
from stratafl.transport.channels import open_aio_channel

log = logging.getLogger("stratafl.controller")

RPC_MARGIN_SECONDS = 30.0


def split_quota(total: int, loads: dict[str, int]) -> dict[str, int]:
    """Split ``total`` over combiners in proportion to their clients (largest remainder)."""
    available = sum(loads.values())
    if available == 0 or total <= 0:
        return {key: 0 for key in loads}
    exact = {key: total * n / available for key, n in loads.items()}
    quota = {key: min(loads[key], math.floor(x)) for key, x in exact.items()}
    by_remainder = sorted(loads, key=lambda k: (-(exact[k] - quota[k]), k))
    for key in by_remainder:
        if sum(quota.values()) >= total:
            break
        if quota[key] < loads[key]:
            quota[key] += 1
    return quota


@dataclass
class RoundReport:
    number: int
    status: str
    model_in: str
    model_out: str | None = None
    reason: str = ""
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class SessionRunner:
    """Runs one session at a time; constructing it starts nothing."""

    def __init__(
        self,
        store: StateStore,
        models: ModelStore,
        discovery: Discovery,
        traffic: TrafficCounter,
        workdir: Path,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._store = store
        self._credentials = credentials
        self._models = models
        self._discovery = discovery
        self._traffic = traffic
        self._workdir = workdir
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self.current: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        return self.current is not None and not self.current.done()

    def start(self, config: SessionConfig) -> str:
        seed_model = config.seed_model_id or self._newest_model()
        self._store.model(seed_model)  # raises NotFoundError for an unknown id
        session_id = uuid.uuid4().hex[:12]
        self._store.create_session(session_id, config.model_dump(), seed_model)
        self._store.add_event(
            "session_started", "controller", f"session {session_id}", config=config.model_dump()
        )
        aggregator = parse_aggregator(config.aggregator)
        state = self._load_optimizer_state(seed_model, aggregator)
        self.current = asyncio.ensure_future(
            self._run(session_id, config, aggregator, seed_model, state)
        )
        return session_id

    def _load_optimizer_state(self, model_id: str, aggregator: Aggregator) -> ServerOptState:
        """The optimiser state saved with ``model_id`` by the same optimiser, else a fresh one.

        Saved with every model a session makes, so a session that continues from a model
        (after a controller restart, say) picks up m, v and t where they were.
        """
        state_id = f"{model_id}-optimizer"
        if not self._models.exists(state_id):
            return ServerOptState()
        with self._models.open(state_id) as stream:
            arrays, metadata = read_params(stream)
        if metadata.get("optimizer") != _optimizer_spec(aggregator):
            return ServerOptState()
        return ServerOptState.from_arrays(arrays)

    def _save_optimizer_state(
        self, model_id: str, aggregator: Aggregator, state: ServerOptState
    ) -> None:
        if isinstance(aggregator.optimizer, ServerAverage):
            return  # plain averaging has no state worth keeping
        staged = self._workdir / "staging" / f"{model_id}-optimizer.safetensors"
        save_params(staged, state.to_arrays(), {"optimizer": _optimizer_spec(aggregator)})
        self._models.put_file(f"{model_id}-optimizer", staged)
        staged.unlink(missing_ok=True)

    def _newest_model(self) -> str:
        models = self._store.models()
        if not models:
            raise StrataError(
                "no model in the store: upload a seed model first (POST /api/v1/models)"
            )
        return str(models[-1]["id"])

    async def _run(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        model_id: str,
        state: ServerOptState,
    ) -> None:
        try:
            for number in range(1, config.rounds + 1):
                report, state = await self.run_round(
                    session_id, config, aggregator, number, model_id, state
                )
                if report.status != "finished":
                    raise RoundFailed(f"round {number} failed: {report.reason}")
                assert report.model_out is not None
                model_id = report.model_out
                self._store.update_session(session_id, rounds_done=number, final_model_id=model_id)
            self._store.update_session(session_id, status="finished", finished_at=time.time())
            self._store.add_event("session_finished", "controller", f"session {session_id}")
        except Exception as exc:  # the session records why it stopped; nothing is lost
            log.exception("session %s failed", session_id)
            self._store.update_session(
                session_id, status="failed", reason=str(exc), finished_at=time.time()
            )
            self._store.add_event("session_failed", "controller", str(exc))

    def _stub(self, entry: CombinerEntry) -> pb_grpc.CombinerStub:
        cached = self._channels.get(entry.combiner_id)
        if cached is None or cached[0] != entry.address:
            channel = open_aio_channel(entry.address, credentials=self._credentials)
            cached = (entry.address, channel)
            self._channels[entry.combiner_id] = cached
        return pb_grpc.CombinerStub(cached[1])

    async def _client_counts(self) -> dict[str, int]:
        async def status(entry: CombinerEntry) -> tuple[str, int | None]:
            try:
                reply = await self._stub(entry).GetStatus(pb.StatusRequest(), timeout=5)
                return entry.combiner_id, len(reply.client_ids)
            except grpc.aio.AioRpcError as exc:
                self._discovery.mark_offline(entry.combiner_id, f"status failed: {exc.code().name}")
                return entry.combiner_id, None

        results = await asyncio.gather(*(status(e) for e in self._discovery.online()))
        return {cid: n for cid, n in results if n is not None}

    async def run_round(
        self,
        session_id: str,
        config: SessionConfig,
        aggregator: Aggregator,
        number: int,
        model_in: str,
        state: ServerOptState,
    ) -> tuple[RoundReport, ServerOptState]:
        """One round from ``model_in``; returns its report and the optimiser's next state."""
        started_wall, started = time.time(), time.monotonic()
        report = RoundReport(number=number, status="failed", model_in=model_in)
        await self._discovery.wait_for_clients(config.min_clients, config.wait_for_clients_seconds)
        counts = await self._client_counts()
        wanted = config.clients_wanted(sum(counts.values()))
        quotas = {k: v for k, v in split_quota(wanted, counts).items() if v > 0}
        with self._models.open(model_in) as stream:
            reference, _ = await asyncio.to_thread(read_params, stream)
        specs = specs_of(reference)
        reducer = Reducer(specs, self._workdir / "staging", aggregator, reference)
        (self._workdir / "staging").mkdir(parents=True, exist_ok=True)
        down_before = self._traffic.bytes_down
        spec = pb.RoundSpec(
            session_id=session_id,
            round=number,
            kind=pb.TRAIN,
            model_id=model_in,
            timeout_seconds=config.round_timeout,
            config_json=json.dumps(config.task_config(number)),
            aggregator=config.aggregator,
            seed=config.seed * 1_000_003 + number,
        )
        try:
            headers = await self._fan_out(spec, quotas, reducer.receive, report)
            report.outcomes = [_outcome(o, h.combiner_id) for h in headers for o in h.outcomes]
            contributors = sum(h.contributors for h in headers if not h.error)
            for header in headers:
                if header.error:
                    report.reason += (
                        f"combiner {header.combiner_id} has no partial: {header.error}; "
                    )
            report.timings["train"] = time.monotonic() - started
            report.traffic = {"combiners_up": reducer.bytes_received}
            if contributors < config.min_clients:
                report.reason += (
                    f"only {contributors} of the {wanted} clients asked returned a usable update; "
                    f"min_clients is {config.min_clients}"
                )
                self._record(session_id, report, started_wall, started, down_before)
                return report, state
            model_out = new_model_id()
            staged = self._workdir / "staging" / f"{model_out}.safetensors"
            try:
                params, state = await asyncio.to_thread(reducer.result, state)
            except StrataError as exc:
                report.reason += f"the partials could not be merged: {exc}"
                self._record(session_id, report, started_wall, started, down_before)
                return report, state
            await asyncio.to_thread(save_params, staged, params, {"parent": model_in})
            self._models.put_file(model_out, staged)
            staged.unlink(missing_ok=True)
            self._save_optimizer_state(model_out, aggregator, state)  # before the model is listed
            self._store.add_model(
                model_out,
                parent_id=model_in,
                session_id=session_id,
                round_number=number,
                size_bytes=self._models.size(model_out),
                num_parameters=num_parameters(params),
            )
            report.model_out, report.status = model_out, "finished"
            report.timings["reduce"] = time.monotonic() - started - report.timings["train"]
            validation_outcomes: list[dict[str, Any]] = []
            if config.validate_each_round:
                validation_outcomes = await self._validate(session_id, config, number, model_out)
                report.validation = summarize_validation(validation_outcomes)
            report.timings["total"] = time.monotonic() - started
            self._record(
                session_id, report, started_wall, started, down_before, validation_outcomes
            )
            return report, state
        finally:  # whatever the outcome, no spooled partial outlives its round
            reducer.discard()

    async def _fan_out(
        self, spec: pb.RoundSpec, quotas: dict[str, int], receive: Any, report: RoundReport
    ) -> list[pb.RoundResultHeader]:
        entries = {e.combiner_id: e for e in self._discovery.online()}

        async def one(combiner_id: str, quota: int) -> pb.RoundResultHeader | None:
            entry = entries.get(combiner_id)
            if entry is None:
                return None
            request = pb.RoundSpec()
            request.CopyFrom(spec)
            request.num_clients = quota
            call = self._stub(entry).RunRound(
                request, timeout=spec.timeout_seconds + RPC_MARGIN_SECONDS
            )
            try:
                return await receive(call.__aiter__())
            except grpc.aio.AioRpcError as exc:
                self._discovery.mark_offline(combiner_id, f"RunRound failed: {exc.code().name}")
                self._store.add_event(
                    "combiner_failed", combiner_id, f"round {spec.round}: {exc.details()}"
                )
                report.reason += f"combiner {combiner_id} failed ({exc.code().name}); "
                return None
            except StrataError as exc:
                self._store.add_event("partial_rejected", combiner_id, str(exc))
                report.reason += f"partial of {combiner_id} rejected: {exc}; "
                return None

        results = await asyncio.gather(*(one(c, q) for c, q in quotas.items()))
        return [h for h in results if h is not None]

    async def _validate(
        self, session_id: str, config: SessionConfig, number: int, model_id: str
    ) -> list[dict[str, Any]]:
        """Ask every connected client to score ``model_id``; their outcomes carry the metrics."""
        spec = pb.RoundSpec(
            session_id=session_id,
            round=number,
            kind=pb.VALIDATE,
            model_id=model_id,
            num_clients=0,
            timeout_seconds=config.round_timeout,
            config_json=json.dumps({"round": number}),
        )

        async def header_only(messages: Any) -> pb.RoundResultHeader:
            first = await messages.__anext__()
            return first.header

        quotas = {e.combiner_id: 0 for e in self._discovery.online()}
        scratch = RoundReport(number=number, status="", model_in=model_id)
        headers = await self._fan_out(spec, quotas, header_only, scratch)
        return [_outcome(o, h.combiner_id) for h in headers for o in h.outcomes]

    def _record(
        self,
        session_id: str,
        report: RoundReport,
        started_wall: float,
        started: float,
        down_before: int,
        validation_outcomes: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store the round; its traffic counts training and validation, both tiers."""
        everything = report.outcomes + (validation_outcomes or [])
        report.traffic["clients_up"] = sum(o["bytes_up"] for o in everything)
        report.traffic["clients_down"] = sum(o["bytes_down"] for o in everything)
        report.traffic["combiners_down"] = self._traffic.bytes_down - down_before
        self._store.add_round(
            session_id=session_id,
            number=report.number,
            status=report.status,
            reason=report.reason,
            model_in=report.model_in,
            model_out=report.model_out,
            started_at=started_wall,
            duration=time.monotonic() - started,
            participants=[o["client_id"] for o in report.outcomes if o["status"] == "ok"],
            outcomes=report.outcomes,
            validation=report.validation,
            traffic=report.traffic,
            timings=report.timings,
        )
        self._store.add_event(
            f"round_{report.status}",
            "controller",
            f"session {session_id} round {report.number}",
            reason=report.reason,
        )


def _optimizer_spec(aggregator: Aggregator) -> str:
    return aggregator.spec.partition("+")[2] or "fedavg"


def _outcome(outcome: pb.ClientOutcome, combiner_id: str) -> dict[str, Any]:
    return {
        "client_id": outcome.client_id,
        "combiner_id": combiner_id,
        "status": outcome.status,
        "reason": outcome.reason,
        "num_examples": outcome.num_examples,
        "metrics": dict(outcome.metrics),
        "bytes_up": outcome.bytes_up,
        "bytes_down": outcome.bytes_down,
        "seconds": outcome.seconds,
    }


def summarize_validation(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-client metrics and their mean, weighted by each client's validation examples."""
    per_client = {o["client_id"]: o["metrics"] for o in outcomes if o["status"] == "ok"}
    summary: dict[str, Any] = {"per_client": per_client, "clients": len(per_client)}
    if not per_client:
        return summary
    weights = {c: float(m.get("num_examples", 1.0)) or 1.0 for c, m in per_client.items()}
    total = sum(weights.values())
    names = set.intersection(*(set(m) for m in per_client.values())) - {"num_examples"}
    for name in sorted(names):
        summary[name] = sum(per_client[c][name] * weights[c] for c in per_client) / total
    return summary
