"""Hostile peers against a secured federation of real processes (TLS, signed tokens).

Each test plays attacks from this process (the attacker: tests/support/hostile.py) against a
federation of real processes on loopback, and proves two things: the attack fails with
the expected gRPC status, REST error or recorded outcome, and a session of the honest
clients still finishes with the model the honest clients alone give. The test app makes
that model exact: client i adds i+1 to every weight and reports 10*(i+1) examples
(`fedavg_shift`).

The attacks of the security issue, by its numbers:
    1 registering as or over a combiner, 2 RunRound / GetStatus by anyone but the
    controller, 3 a client's identity taken, 9 forged and expired tokens
        -> test_impostors_cannot_register_run_rounds_or_take_a_clients_identity
    4 an inflated example count, 5 reports of the wrong kind, 7 NaN metrics,
    8 a revoked token
        -> test_lying_clients_are_refused_and_a_revoked_token_stops_working
    6 model downloads opened and never read
        -> test_downloads_opened_and_never_read_do_not_stall_the_honest_clients
and two more: finite validation reports that blank the round's scores, and an update
cancelled just as the combiner collects it.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from stratafl.errors import AuthError, PermissionDenied
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security import Role, read_claims_unverified
from stratafl.settings import SessionConfig
from tests.support.hostile import (
    NO_TOKEN,
    Attacker,
    HostileClient,
    client_token,
    code_of,
    combiner_address,
    drain,
    ended_with,
    fedavg_shift,
    read_hog,
    run_session_strictly,
    script_errors,
    shifted,
    start_clients,
    start_combiner,
    wait_until,
)
from tests.support.paths import TEST_APP

pytestmark = pytest.mark.slow

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS


def _combiners(fed: LocalFederation) -> list[tuple[str, str, str]]:
    return sorted((c.id, c.address, c.status) for c in fed.client.combiners())


def _honest_session(fed: LocalFederation, seed_id: str, honest: list[int], **settings):
    """A one-round session from the seed: asserts that it finished, at the first try, with
    the model of the ``honest`` clients alone; returns it and its rounds."""
    config = SessionConfig(rounds=1, seed_model_id=seed_id, **settings)
    session, rounds = run_session_strictly(fed, config)
    assert session.status == "finished", (session.reason, [r.reason for r in rounds])
    assert [r.status for r in rounds] == ["finished"]
    assert session.final_model_id is not None
    params = fed.client.download_params(session.final_model_id)
    np.testing.assert_allclose(params["w"], fedavg_shift(honest), rtol=1e-6)
    np.testing.assert_allclose(params["b"], fedavg_shift(honest), rtol=1e-6)
    return session, rounds


def test_impostors_cannot_register_run_rounds_or_take_a_clients_identity(federation):
    with federation(clients=2, combiners=1) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(2)
        address = combiner_address(fed, "combiner-0")
        before = _combiners(fed)
        combiner_0 = (fed.workdir / "tokens" / "combiner-0.token").read_text().strip()
        rogue = attacker.token("rogue", Role.COMBINER)
        client_9 = attacker.token("client-9", Role.CLIENT)
        ticket_9 = attacker.assigned(client_9).ticket  # for combiner-0, the only one
        ticket_0 = attacker.assigned(client_token(fed, 0)).ticket
        wrong_roles = {"a client": client_token(fed, 0), "an admin": fed.admin_token}
        not_ours = {
            "no token": NO_TOKEN,
            "a forged combiner-0": attacker.forged_token("combiner-0", Role.COMBINER),
            "an expired combiner-0": attacker.expired_token("combiner-0", Role.COMBINER),
        }

        # 1. Only a combiner registers, only under its own id, only at its own address.
        takeover = pb.CombinerInfo(combiner_id="combiner-0", address="127.0.0.1:9", max_clients=9)
        for what, token in not_ours.items():
            code = code_of(lambda t=token: attacker.controller(t).RegisterCombiner(takeover))
            assert code == UNAUTHENTICATED, what
        for what, token in wrong_roles.items():
            code = code_of(lambda t=token: attacker.controller(t).RegisterCombiner(takeover))
            assert code == PERMISSION_DENIED, what
        as_rogue = attacker.controller(rogue)
        assert code_of(lambda: as_rogue.RegisterCombiner(takeover)) == PERMISSION_DENIED
        squat = pb.CombinerInfo(combiner_id="rogue", address=address, max_clients=9)
        assert code_of(lambda: as_rogue.RegisterCombiner(squat)) == ALREADY_EXISTS
        # ... nor speaks for another combiner, nor fetches models without being one
        forget = pb.CombinerHeartbeat(combiner_id="combiner-0", client_ids=[])
        assert code_of(lambda: as_rogue.Heartbeat(forget)) == PERMISSION_DENIED
        ghost = pb.ClientEvent(combiner_id="combiner-0", client_id="ghost", connected=True)
        assert code_of(lambda: as_rogue.ReportClientEvent(ghost)) == PERMISSION_DENIED
        as_client = attacker.controller(client_token(fed, 0))
        assert drain(as_client.DownloadModel(pb.ModelRequest(model_id=seed.id))) == (
            [],
            PERMISSION_DENIED,
        )
        plaintext = attacker.plaintext_channel(fed.grpc_address)
        code = code_of(lambda: plaintext.unary_unary("/stratafl.v1.Controller/Heartbeat")(b""))
        assert code == grpc.StatusCode.UNAVAILABLE  # no TLS, no conversation
        assert _combiners(fed) == before
        assert "ghost" not in {c.id for c in fed.client.clients()}

        # 2. Only the controller runs a round on a combiner or asks who is there.
        spec = pb.RoundSpec(
            session_id="heist",
            round=1,
            kind=pb.TRAIN,
            model_id=seed.id,
            timeout_seconds=5,
            settings=pb.RoundSettings(aggregator="fedavg"),
        )
        callers = {
            **{what: (token, UNAUTHENTICATED) for what, token in not_ours.items()},
            "a client's ticket": (ticket_0, PERMISSION_DENIED),
            "a client's own token (for the controller)": (client_token(fed, 0), UNAUTHENTICATED),
            "an admin": (fed.admin_token, PERMISSION_DENIED),
            "a combiner": (rogue, PERMISSION_DENIED),
            "combiner-0 itself": (combiner_0, PERMISSION_DENIED),
            "a forged controller": (
                attacker.forged_token("controller", Role.CONTROLLER),
                UNAUTHENTICATED,
            ),
            "an expired controller": (
                attacker.expired_token("controller", Role.CONTROLLER),
                UNAUTHENTICATED,
            ),
        }
        for what, (token, expected) in callers.items():
            stub = attacker.combiner(address, token)
            assert drain(stub.RunRound(spec, timeout=30)) == ([], expected), what
            assert code_of(lambda s=stub: s.GetStatus(pb.StatusRequest())) == expected, what

        # 3. A client is its token's subject: no stream under another's name, no second
        # stream beside its own, no report or assignment in another's name.
        as_9 = attacker.combiner(address, ticket_9)
        hijack = as_9.TaskStream(pb.ClientHello(client_id="client-0"), timeout=30)
        assert drain(hijack) == ([], PERMISSION_DENIED)
        forged = attacker.combiner(address, attacker.forged_token("client-0", Role.CLIENT))
        assert drain(forged.TaskStream(pb.ClientHello(), timeout=30)) == ([], UNAUTHENTICATED)
        twin = attacker.combiner(address, ticket_0)
        hello = pb.ClientHello(client_id="client-0")
        assert drain(twin.TaskStream(hello, timeout=30)) == ([], ALREADY_EXISTS)
        report = pb.ValidationReport(task_id="x", client_id="client-0", metrics={"accuracy": 1})
        assert code_of(lambda: as_9.ReportValidation(report)) == PERMISSION_DENIED
        with attacker.rest(client_9) as rest, pytest.raises(PermissionDenied):
            rest.assign("client-0")

        # The honest clients' session: client-0 is still client-0, combiner-0 still serves.
        _, rounds = _honest_session(fed, seed.id, [0, 1], min_clients=2)
        outcome = {o.client_id: o.status for o in rounds[0].outcomes}
        assert outcome == {"client-0": "ok", "client-1": "ok"}
        assert _combiners(fed) == before


def _answers_with_the_wrong_kind(client: HostileClient, task: pb.Task) -> None:
    """Answer a training task with a validation report, a validation task with an update
    and then NaN metrics, and give up on each task once refused."""
    if task.kind == pb.TRAIN:
        client.report_validation(task, {"accuracy": 1.0, "loss": 0.0, "num_examples": 1.0})
        client.report_failure(task)
    else:
        client.upload(task, shifted(1000, 100.0), num_examples=10)
        client.report_validation(task, {"accuracy": float("nan"), "loss": 0.0})


def test_lying_clients_are_refused_and_a_revoked_token_stops_working(federation, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_INFLATE", "client-2")  # claims 2**62 examples
    with federation(clients=3, combiners=1) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        token = attacker.token("client-9", Role.CLIENT)
        assignment = attacker.assigned(token)
        mallory = HostileClient(
            attacker,
            assignment.address,
            assignment.ticket,
            "client-9",
            _answers_with_the_wrong_kind,
            assignment=assignment,
        ).connect()
        fed.wait_for_clients(4)

        # 4, 5, 7: an inflated weight, reports of the wrong kind, NaN metrics.
        _, rounds = _honest_session(fed, seed.id, [0, 1], min_clients=2)
        outcome = {o.client_id: o for o in rounds[0].outcomes}
        assert {c: o.status for c, o in outcome.items()} == {
            "client-0": "ok",
            "client-1": "ok",
            "client-2": "rejected",
            "client-9": "failed",  # its validation report did not count as an update
        }
        assert f"limit of {10**9}" in outcome["client-2"].reason
        assert sorted(rounds[0].participants) == ["client-0", "client-1"]
        validation = rounds[0].validation
        assert set(validation.per_client) == {"client-0", "client-1", "client-2"}
        mean_w = validation.mean("mean_w")
        assert mean_w is not None and math.isfinite(mean_w)
        assert mean_w == pytest.approx(fedavg_shift([0, 1]))
        # its last answer may still be on its way back to it when the session is finished
        wait_until(lambda: len(mallory.acks) == 4, 10, "the attacker's four answers")
        refused = [(what, task.kind, ack.message) for what, task, ack in mallory.acks if not ack.ok]
        assert [(what, kind) for what, kind, _ in refused] == [
            ("validation", pb.TRAIN),
            ("update", pb.VALIDATE),
            ("validation", pb.VALIDATE),
        ]
        assert "asks for an update" in refused[0][2]
        assert "asks for a validation report" in refused[1][2]
        assert "nan" in refused[2][2]

        # 5: with min_clients=3, two honest updates and a report of the wrong kind fail the
        # round: the attacker is not counted.
        config = SessionConfig(
            rounds=1, min_clients=3, seed_model_id=seed.id, validate_each_round=False
        )
        _, rounds = run_session_strictly(fed, config)
        assert rounds[0].status == "failed"
        assert "only 2 of the 4 clients asked returned a usable update" in rounds[0].reason
        outcome = {o.client_id: o.status for o in rounds[0].outcomes}
        assert outcome["client-9"] == "failed"
        assert sorted(rounds[0].participants) == ["client-0", "client-1"]
        assert script_errors(mallory) == []

        # 8: a revoked token is refused by the controller at once, by the combiner after
        # its next heartbeat (its ticket carries the token's id: revoked with it).
        stub = attacker.combiner(assignment.address, assignment.ticket)
        probe = pb.TaskFailure(task_id="none", client_id="client-9", reason="probe")
        assert code_of(lambda: stub.ReportFailure(probe)) == grpc.StatusCode.OK
        fed.client.revoke_token(read_claims_unverified(token).token_id)
        with attacker.rest(token) as rest, pytest.raises(AuthError, match="revoked"):
            rest.assign()
        wait_until(
            lambda: code_of(lambda: stub.ReportFailure(probe)) == UNAUTHENTICATED,
            5,
            "the combiner to refuse the revoked token",
        )
        assert drain(stub.TaskStream(pb.ClientHello(), timeout=30)) == ([], UNAUTHENTICATED)
        assert mallory.stream_code(timeout=5) is not None, "a revoked client kept its stream"
        _, rounds = _honest_session(fed, seed.id, [0, 1], min_clients=2)
        assert "client-9" not in {o.client_id for o in rounds[0].outcomes}
        assert script_errors(mallory) == []


def test_a_client_cannot_blank_the_rounds_validation_with_finite_reports(federation):
    # Finite, well-formed validation reports that abuse how the round's scores are
    # averaged: a weight (num_examples) and a score near the float64 maximum, then a report
    # with none of the metrics the honest clients report.
    reports = iter(
        [
            {"accuracy": 1e308, "loss": 0.0, "num_examples": 1e308},
            {"acc": 1.0},
        ]
    )

    def skew(client: HostileClient, task: pb.Task) -> None:
        if task.kind == pb.TRAIN:
            client.report_failure(task)
        else:
            client.report_validation(task, next(reports))

    with federation(clients=2, combiners=1) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        token = attacker.token("client-9", Role.CLIENT)
        assignment = attacker.assigned(token)
        mallory = HostileClient(
            attacker, assignment.address, assignment.ticket, "client-9", skew, assignment=assignment
        ).connect()
        fed.wait_for_clients(3)
        config = SessionConfig(rounds=2, min_clients=2, seed_model_id=seed.id)
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", session.reason
        scores = {r.number: r.validation.mean("accuracy") for r in rounds}
        assert all(s is not None and math.isfinite(s) for s in scores.values()), scores
        assert script_errors(mallory) == []


HOGS = 6
MODEL_PARAMS = 8_000_000
"""A 32 MB model: 32 1 MiB chunks, more than gRPC buffers for the two downloads a client may
hold at once when it never reads them."""


def test_downloads_opened_and_never_read_do_not_stall_the_honest_clients(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_TEST_PARAMS", str(MODEL_PARAMS))
    spec = FederationSpec(app=TEST_APP, clients=0, combiners=0, workdir=tmp_path / "fed")
    with LocalFederation(spec) as fed, Attacker(fed) as attacker:
        # A transfer may hold one of the combiner's 4 slots ~2 s (the default is 30 s plus
        # 1 s per MB, too long for a test); an honest 32 MB transfer takes well under that.
        start_combiner(fed, "combiner-0", transfer_grace_seconds=2.0, min_transfer_rate=50e6)
        start_clients(fed, 2)
        seed = fed.upload_seed_model()
        token = attacker.token("client-9", Role.CLIENT)
        assignment = attacker.assigned(token)

        def hog(client: HostileClient, task: pb.Task) -> None:
            if not client.hogs:  # the model is cached now: take every slot it may, read nothing
                calls = client.hog_downloads(task.model_id, HOGS, task.task_id)
                # a client holds at most 2 transfers at once: the others are refused
                wait_until(
                    lambda: ended_with(calls, grpc.StatusCode.RESOURCE_EXHAUSTED) == HOGS - 2,
                    30,
                    "all but two downloads refused",
                )
            client.report_failure(task)

        mallory = HostileClient(
            attacker,
            assignment.address,
            assignment.ticket,
            "client-9",
            hog,
            assignment=assignment,
        ).connect()
        fed.wait_for_clients(3)
        config = SessionConfig(rounds=2, min_clients=2, round_timeout=20, seed_model_id=seed.id)
        session, rounds = run_session_strictly(fed, config)
        assert [r.status for r in rounds] == ["finished", "finished"], [r.reason for r in rounds]
        assert session.status == "finished", session.reason
        for record in rounds:
            assert sorted(record.participants) == ["client-0", "client-1"]
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        np.testing.assert_allclose(params["w"], fedavg_shift([0, 1], rounds=2), rtol=1e-6)
        # None of the downloads the attacker held delivered the model: each was cut.
        assert len(mallory.hogs) == HOGS
        for held in mallory.hogs:
            assert read_hog(held, seconds=1.0) < MODEL_PARAMS * 4
        assert script_errors(mallory) == []


POISON_PARAMS = 8_000_000
"""A 32 MB model: the combiner takes milliseconds to fold an update of it, and the client
that cancels its upload at the right moment has a window of that size."""
POISON_ROUNDS = 24
HONEST_SHIFT = fedavg_shift([0, 1])


def test_an_upload_cancelled_as_it_is_collected_counts_whole_or_not_at_all(tmp_path, monkeypatch):
    # Each round the attacker sends the very model the honest clients' FedAvg gives (the
    # model it was sent plus 5/3) claiming 10**6 examples, so that counted whole it
    # changes nothing, and cancels its call as the combiner collects it: a little later
    # each round. Counted in part (its values without its weight, or its weight without
    # it being a contributor), it would move the model or fail the combiner's partial.
    monkeypatch.setenv("STRATA_TEST_PARAMS", str(POISON_PARAMS))
    spec = FederationSpec(app=TEST_APP, clients=0, combiners=0, workdir=tmp_path / "fed")
    with LocalFederation(spec) as fed, Attacker(fed) as attacker:
        start_combiner(fed, "combiner-0")
        start_clients(fed, 2)
        seed = fed.upload_seed_model()
        token = attacker.token("client-9", Role.CLIENT)
        assignment = attacker.assigned(token)
        ended: list[grpc.StatusCode] = []

        def cancel_later_each_round(client: HostileClient, task: pb.Task) -> None:
            harmless = {k: v + np.float32(HONEST_SHIFT) for k, v in client.download(task).items()}
            delay = 0.005 * len(ended)
            ended.append(client.upload_and_cancel(task, harmless, 10**6, delay))
            client.report_failure(task)

        mallory = HostileClient(
            attacker,
            assignment.address,
            assignment.ticket,
            "client-9",
            cancel_later_each_round,
            assignment=assignment,
        ).connect()
        fed.wait_for_clients(3)
        config = SessionConfig(
            rounds=POISON_ROUNDS, min_clients=2, validate_each_round=False, seed_model_id=seed.id
        )
        session, rounds = run_session_strictly(fed, config)
        failed = [(r.number, r.reason) for r in rounds if r.status != "finished"]
        assert failed == [], failed
        assert session.status == "finished", session.reason
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        honest = fedavg_shift([0, 1], rounds=POISON_ROUNDS)
        assert (float(params["w"][0]), float(params["b"][0])) == pytest.approx(
            (honest, honest), rel=1e-4
        )
        assert grpc.StatusCode.CANCELLED in ended  # the attack was played, at least once
        assert script_errors(mallory) == []
