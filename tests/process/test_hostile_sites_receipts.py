"""Enrolled hostile sites cannot make participants, counts or scores (issue 19).

Real processes on loopback with tokens issued normally; the attacker plays from this
process (tests/support/hostile.py): a `RogueCombiner` enrolled with a genuine combiner
token, and a client holding task streams on two combiners. The rows of the issue's table:

    (a) a combiner reports invented clients (1e15 examples, invented scores) and a partial
        of 66.0 -> test_a_combiner_cannot_invent_clients_counts_or_scores
    (b) a combiner heartbeats an empty list and a huge capacity
        -> test_a_combiner_hiding_its_clients_attracts_no_more
    (c) a client with task streams on two combiners (its ticket admits it on one only)
        -> test_a_client_on_two_combiners_counts_once
    (d) a client that signs its receipts with a key of its own making, on an honest combiner
        -> test_a_bad_receipt_costs_its_client_not_the_partial

Each honest round's model is the exact FedAvg of the honest clients (`fedavg_shift`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from stratafl.combiner.receipts import REPORT_RECEIPT_FAILS, UPDATE_RECEIPT_FAILS
from stratafl.controller.discovery import RESERVATION_SECONDS
from stratafl.launch.federation import FederationSpec, LocalFederation
from stratafl.proto import stratafl_pb2 as pb
from stratafl.records import RoundRecord
from stratafl.security import Role
from stratafl.settings import SessionConfig
from tests.support.hostile import (
    Attacker,
    HostileClient,
    Invented,
    RogueCombiner,
    combiner_address,
    fedavg_shift,
    run_session_strictly,
    script_errors,
    shifted,
)
from tests.support.paths import TEST_APP

pytestmark = pytest.mark.slow

GHOSTS = [Invented(f"ghost-{i}", 10**15, {"accuracy": 0.99, "loss": 0.0}) for i in range(5)]
HIDDEN = ["client-8", "client-9"]
"""Real identities (tokens issued normally) the controller assigns to the rogue combiner."""


@pytest.fixture(scope="module")
def rogue_federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalFederation, RogueCombiner, str]]:
    """Three honest clients on combiner-0, and a rogue combiner that holds two assigned
    identities, heartbeats an empty list with a huge capacity, and reports those two and
    five invented clients in its status and its rounds. Yields it and the seed's id."""
    workdir: Path = tmp_path_factory.mktemp("receipts") / "fed"
    spec = FederationSpec(app=TEST_APP, clients=3, combiners=1, workdir=workdir)
    with LocalFederation(spec) as fed, Attacker(fed) as attacker:
        seed = fed.upload_seed_model()
        fed.wait_for_clients(3)
        model = fed.client.download_params(seed.id)
        rogue = RogueCombiner(
            attacker,
            "rogue",
            model=model,
            invented=[*(Invented(c, 10**15, {"accuracy": 0.99}) for c in HIDDEN), *GHOSTS],
            status_ids=[*HIDDEN, *(g.client_id for g in GHOSTS)],
            heartbeat_ids=[],
            max_clients=100_000,  # the most a combiner may say
        ).start()
        try:
            for client_id in HIDDEN:  # least loaded: the controller sends both to the rogue
                assigned = attacker.assigned(attacker.token(client_id, Role.CLIENT))
                assert assigned.combiner_id == "rogue"
            yield fed, rogue, seed.id
        finally:
            rogue.stop()


def _partial_rejected(fed: LocalFederation, session_id: str) -> list[str]:
    events = fed.client.events(session_id=session_id)
    return [e.message for e in events if e.kind == "partial_rejected"]


def test_a_combiner_cannot_invent_clients_counts_or_scores(rogue_federation):
    fed, rogue, seed_id = rogue_federation
    # min_clients 5: met only if the invented or the rogue's hidden clients counted
    # (every client is connected already: the round need not wait for more)
    config = SessionConfig(
        rounds=1, min_clients=5, wait_for_clients_seconds=1, seed_model_id=seed_id
    )
    session, rounds = run_session_strictly(fed, config)
    assert [r.status for r in rounds] == ["failed"], [r.reason for r in rounds]
    assert "min_clients is 5" in rounds[0].reason
    # The honest session: the rogue was asked, and nothing it said counted.
    config = SessionConfig(rounds=1, min_clients=3, seed_model_id=seed_id)
    session, rounds = run_session_strictly(fed, config)
    assert session.status == "finished", (session.reason, [r.reason for r in rounds])
    (record,) = rounds
    assert sorted(record.participants) == ["client-0", "client-1", "client-2"]
    _assert_rogue_rejected(record)
    assert any("rogue" in m for m in _partial_rejected(fed, session.id))
    assert session.final_model_id is not None
    params = fed.client.download_params(session.final_model_id)
    np.testing.assert_allclose(params["w"], fedavg_shift([0, 1, 2]), rtol=1e-6)
    np.testing.assert_allclose(params["b"], fedavg_shift([0, 1, 2]), rtol=1e-6)
    validation = record.validation
    assert set(validation.per_client) == {"client-0", "client-1", "client-2"}
    assert validation.mean("mean_w") == pytest.approx(fedavg_shift([0, 1, 2]), rel=1e-5)
    # the controller chose the rogue's clients: only the two it assigned there
    assert {tuple(s.client_ids) for s in rogue.specs} == {tuple(HIDDEN)}
    assert all(s.round_id for s in rogue.specs)


def _assert_rogue_rejected(record: RoundRecord) -> None:
    rogue = [o for o in record.outcomes if o.combiner_id == "rogue"]
    assert {o.client_id for o in rogue} == {*HIDDEN, *(g.client_id for g in GHOSTS)}
    for outcome in rogue:
        assert outcome.status == "rejected", outcome
        assert f"combiner rogue reported client {outcome.client_id}" in outcome.reason


def test_a_combiner_hiding_its_clients_attracts_no_more(rogue_federation):
    fed, rogue, _ = rogue_federation
    # The rogue heartbeats no client: once the two assigned to it may no longer be on
    # their way (the reservation), the rebalancer would even 3 against 0. Watch for it.
    deadline = time.monotonic() + RESERVATION_SECONDS + 10
    while time.monotonic() < deadline:
        placed = {c.id: c.combiner_id for c in fed.client.clients()}
        assert all(placed[f"client-{i}"] == "combiner-0" for i in range(3)), placed
        moved = [e for e in fed.client.events() if e.kind == "clients_moved"]
        assert moved == [], [e.message for e in moved]
        time.sleep(0.5)


@pytest.fixture
def two_combiners(tmp_path: Path) -> Iterator[LocalFederation]:
    spec = FederationSpec(
        app=TEST_APP, clients=2, combiners=2, workdir=tmp_path / "fed", placement={0: 0, 1: 1}
    )
    with LocalFederation(spec) as fed:
        yield fed


def test_a_client_on_two_combiners_counts_once(two_combiners):
    fed = two_combiners
    seed = fed.upload_seed_model()
    fed.wait_for_clients(2)
    size = fed.client.download_params(seed.id)["w"].size
    with Attacker(fed) as attacker:
        token = attacker.token("client-9", Role.CLIENT)
        assignment = attacker.assigned(token, preferred_combiner="combiner-0")
        assert assignment.combiner_id == "combiner-0"

        def train_as_client_9(client: HostileClient, task: pb.Task) -> None:
            """An honest answer of client i = 9: +10 with 100 examples (signed)."""
            if task.kind == pb.TRAIN:
                client.upload(task, shifted(size, 10.0), num_examples=100)
            else:
                client.report_validation(task, {"accuracy": 10.0})

        twins = [
            HostileClient(
                attacker,
                combiner_address(fed, combiner_id),
                assignment.ticket,
                "client-9",
                train_as_client_9,
                assignment=assignment,
                combiner_id=combiner_id,
            ).connect()
            for combiner_id in ("combiner-0", "combiner-1")
        ]
        fed.wait_for_clients(3)
        # The ticket names combiner-0: the twin on combiner-1 is refused at its door.
        assert twins[1].stream_code() == grpc.StatusCode.UNAUTHENTICATED
        # Three identities: min_clients 4 is met only if client-9 counts twice.
        config = SessionConfig(
            rounds=1, min_clients=4, wait_for_clients_seconds=1, seed_model_id=seed.id
        )
        _, rounds = run_session_strictly(fed, config)
        assert [r.status for r in rounds] == ["failed"], [r.reason for r in rounds]
        assert "min_clients is 4" in rounds[0].reason
        config = SessionConfig(rounds=1, min_clients=3, seed_model_id=seed.id)
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", (session.reason, [r.reason for r in rounds])
        (record,) = rounds
        assert sorted(record.participants) == ["client-0", "client-1", "client-9"]
        assert [o.combiner_id for o in record.outcomes if o.client_id == "client-9"] == [
            "combiner-0"
        ]
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        # Round 1 caps each claim at 3x its combiner's lower median (weight caps): next to
        # client-0's 10 examples on combiner-0, client-9's 100 weigh 30.
        expected = (10 * 1 + 30 * 10 + 20 * 2) / (10 + 30 + 20)
        np.testing.assert_allclose(params["w"], expected, rtol=1e-6)
        assert script_errors(twins[0]) == []


def test_a_bad_receipt_costs_its_client_not_the_partial(two_combiners):
    """The combiner verifies each receipt with the public key the controller sent in the
    round's spec, and folds nothing whose receipt fails: its partial still verifies at the
    controller, and the round is the exact FedAvg of the honest clients."""
    fed = two_combiners
    seed = fed.upload_seed_model()
    fed.wait_for_clients(2)
    size = fed.client.download_params(seed.id)["w"].size
    with Attacker(fed) as attacker:
        token = attacker.token("client-7", Role.CLIENT)
        assignment = attacker.assigned(token, preferred_combiner="combiner-0")
        assert assignment.combiner_id == "combiner-0"

        def answer(client: HostileClient, task: pb.Task) -> None:
            """Client i = 7's honest numbers, under a receipt no key of its verifies."""
            if task.kind == pb.TRAIN:
                client.upload(task, shifted(size, 8.0), num_examples=80)
            else:
                client.report_validation(task, {"accuracy": 0.5})

        forger = HostileClient(
            attacker,
            combiner_address(fed, "combiner-0"),
            assignment.ticket,  # the combiner takes its own audience's ticket only
            "client-7",
            answer,
            assignment=assignment,
        )
        forger.receipt_key = secrets.token_bytes(32)  # not the key /assign gave it
        forger.connect()
        fed.wait_for_clients(3)
        config = SessionConfig(rounds=1, min_clients=2, seed_model_id=seed.id)
        session, rounds = run_session_strictly(fed, config)
        assert session.status == "finished", (session.reason, [r.reason for r in rounds])
        (record,) = rounds
        assert sorted(record.participants) == ["client-0", "client-1"]
        (forged,) = [o for o in record.outcomes if o.client_id == "client-7"]
        assert (forged.status, forged.reason) == ("rejected", UPDATE_RECEIPT_FAILS)
        assert _partial_rejected(fed, session.id) == []
        assert session.final_model_id is not None
        params = fed.client.download_params(session.final_model_id)
        np.testing.assert_allclose(params["w"], fedavg_shift([0, 1]), rtol=1e-6)
        assert set(record.validation.per_client) == {"client-0", "client-1"}
        refused = {(what, ack.message) for what, _, ack in forger.acks if not ack.ok}
        assert refused == {("update", UPDATE_RECEIPT_FAILS), ("validation", REPORT_RECEIPT_FAILS)}
        assert script_errors(forger) == []
