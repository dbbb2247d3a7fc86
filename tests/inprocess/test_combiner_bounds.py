"""What a combiner refuses from its clients, whatever they claim: another client's task,
the wrong kind of report, an inflated example count, non-finite metrics, a trickle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from stratafl.combiner.claims import Caller
from stratafl.combiner.limits import TooManyTransfers, TransferLimits
from stratafl.errors import NotFoundError, PermissionDenied
from stratafl.params import specs_of
from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import OutcomeStatus
from stratafl.transport.streams import (
    header_to_proto,
    params_chunks,
    receive_model,
    send_model,
)
from tests.support.combiner_runner import combiner_runner
from tests.support.inprocess import aiter_of


def _update(task: pb.Task, client_id: str, examples: int, metrics=None, chunks=None):
    params = {"w": np.ones(8, np.float32)}
    header = pb.UpdateHeader(
        task_id=task.task_id,
        client_id=client_id,
        num_examples=examples,
        metrics=metrics or {},
        model=header_to_proto(task.model_id, specs_of(params)),
    )
    return list(send_model(pb.UpdateChunk, header, chunks or params_chunks(params)))


async def _round(tmp_path: Path, kind, answer, *, max_examples=0, **limits):
    """Run one round over clients c0, c1; ``answer(runner, tasks)`` plays the clients."""
    runner, registry = combiner_runner(tmp_path, **limits)
    streams = {c: registry.connect(c) for c in ("c0", "c1")}
    spec = pb.RoundSpec(
        round=1,
        kind=kind,
        model_id="m",
        client_ids=list(streams),
        timeout_seconds=2.0,
        settings=pb.RoundSettings(max_examples_per_client=max_examples),
    )
    running = asyncio.ensure_future(runner.run(spec))
    tasks = {c: await stream.tasks.get() for c, stream in streams.items()}
    acks = await answer(runner, tasks)
    result = await running
    outcomes = {o.client_id: o for o in result.header.outcomes}
    return acks, outcomes, runner


async def _send(runner, messages, caller):
    return await runner.accept_update(await receive_model(aiter_of(messages), "an update"), caller)


def test_a_client_cannot_answer_another_clients_task(tmp_path):
    async def answer(runner, tasks):
        stolen = await _send(runner, _update(tasks["c0"], "c0", 10), Caller("c1"))
        own = await _send(runner, _update(tasks["c1"], "c1", 10), Caller("c1"))
        return stolen, own

    (stolen, own), outcomes, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer))
    assert not stolen.ok and "sent to another client" in stolen.message
    assert own.ok
    assert outcomes["c0"].status == 6  # OUTCOME_TIMEOUT: c0 never answered itself


def test_reports_of_the_wrong_kind_are_refused_and_do_not_count(tmp_path):
    async def answer(runner, tasks):
        report = pb.ValidationReport(task_id=tasks["c0"].task_id, metrics={"accuracy": 1.0})
        return runner.accept_validation(report, Caller("c0"))

    ack, outcomes, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer))
    assert not ack.ok and "asks for an update" in ack.message
    assert all(o.status != 2 for o in outcomes.values())  # nobody counts as ok


def test_non_finite_validation_metrics_are_refused(tmp_path):
    async def answer(runner, tasks):
        nan = pb.ValidationReport(task_id=tasks["c0"].task_id, metrics={"accuracy": float("nan")})
        fine = pb.ValidationReport(task_id=tasks["c1"].task_id, metrics={"accuracy": 0.5})
        return runner.accept_validation(nan, Caller("c0")), runner.accept_validation(
            fine, Caller("c1")
        )

    (nan, fine), outcomes, _ = asyncio.run(_round(tmp_path, pb.VALIDATE, answer))
    assert not nan.ok and "finite" in nan.message and fine.ok
    assert outcomes["c0"].status == 3  # OUTCOME_REJECTED
    assert dict(outcomes["c1"].metrics) == {"accuracy": 0.5}


@pytest.mark.parametrize(
    ("examples", "cap", "accepted"),
    [(2**62, 0, False), (1001, 1000, False), (1000, 1000, True), (0, 0, False), (-5, 0, False)],
)
def test_example_counts_are_bounded_by_the_session(tmp_path, examples, cap, accepted):
    async def answer(runner, tasks):
        return await _send(runner, _update(tasks["c0"], "c0", examples), Caller("c0"))

    ack, outcomes, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer, max_examples=cap or 10**9))
    assert ack.ok is accepted, ack.message
    status = OutcomeStatus.OK if accepted else OutcomeStatus.REJECTED
    assert outcomes["c0"].status == {OutcomeStatus.OK: 2, OutcomeStatus.REJECTED: 3}[status]


def test_a_clients_enrolment_caps_its_example_count(tmp_path):
    async def answer(runner, tasks):
        return await _send(runner, _update(tasks["c0"], "c0", 500), Caller("c0", max_examples=100))

    ack, _, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer))
    assert not ack.ok and "over this client's limit of 100" in ack.message


def test_metrics_are_bounded_in_count_and_value(tmp_path):
    async def answer(runner, tasks):
        many = {f"m{i}": 1.0 for i in range(65)}
        first = await _send(runner, _update(tasks["c0"], "c0", 10, metrics=many), Caller("c0"))
        inf = {"loss": float("inf")}
        second = await _send(runner, _update(tasks["c1"], "c1", 10, metrics=inf), Caller("c1"))
        return first, second

    (many, inf), _, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer))
    assert not many.ok and "at most 64 metrics" in many.message
    assert not inf.ok and "finite" in inf.message


def test_a_trickling_upload_gives_up_its_slot_and_leaves_no_file(tmp_path):
    async def trickle(data):
        for chunk in data:
            await asyncio.sleep(0.3)
            yield chunk

    async def answer(runner, tasks):
        messages = _update(tasks["c0"], "c0", 10, chunks=[b"\0" * 4] * 8)
        header, data = messages[0], [m.data for m in messages[1:]]

        async def stream():
            yield header
            async for chunk in trickle(data):
                yield pb.UpdateChunk(data=chunk)

        return await runner.accept_update(await receive_model(stream(), "u"), Caller("c0"))

    ack, outcomes, runner = asyncio.run(
        _round(tmp_path, pb.TRAIN, answer, transfer_grace=0.5, min_transfer_rate=1e9)
    )
    assert not ack.ok and "too slowly" in ack.message
    assert runner.transfers._value == 4  # noqa: SLF001 - every slot is free again
    assert not list((tmp_path / "updates").glob("*"))


def test_a_model_is_downloaded_only_with_an_open_task_of_the_caller_that_names_it(tmp_path):
    async def answer(runner, tasks):
        c0, c1 = tasks["c0"], tasks["c1"]
        refused = {}
        for what, args in {
            "no task": ("", "m", "c0"),
            "an unknown task": ("nope", "m", "c0"),
            "another client's task": (c1.task_id, "m", "c0"),
            "another model": (c0.task_id, "other", "c0"),
        }.items():
            with pytest.raises((NotFoundError, PermissionDenied)) as caught:
                runner.download_for(*args)
            refused[what] = str(caught.value)
        own = runner.download_for(c0.task_id, "m", "c0")
        insecure = runner.download_for(c1.task_id, "m", None)  # no identity: the task's own
        runner.accept_failure(pb.TaskFailure(task_id=c0.task_id), Caller("c0"))
        with pytest.raises(NotFoundError):  # answered: nothing left to download
            runner.download_for(c0.task_id, "m", "c0")
        return refused, own, insecure

    (refused, own, insecure), _, _ = asyncio.run(_round(tmp_path, pb.TRAIN, answer))
    assert "no open task" in refused["no task"]
    assert "no open task" in refused["an unknown task"]
    assert "sent to another client" in refused["another client's task"]
    assert "names model 'm'" in refused["another model"]
    assert own.client_id == "c0" and insecure.client_id == "c1"


def test_a_client_holds_at_most_its_share_of_transfers():
    limits = TransferLimits(per_client=2)
    with limits.hold("c0"), limits.hold("c0"):
        with pytest.raises(TooManyTransfers, match="already has 2 model transfers open"):
            with limits.hold("c0"):
                pass
        with limits.hold("c1"):  # another identity is not affected
            assert limits.open_for("c1") == 1
    assert limits.open_for("c0") == 0
    with limits.hold("c0"):  # released: free again
        assert limits.open_for("c0") == 1
