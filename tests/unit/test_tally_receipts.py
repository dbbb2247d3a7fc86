"""The controller's tally: whom it selects, which outcomes it counts, which partials it
believes. Plain values in, plain values out."""

from __future__ import annotations

import pytest

from stratafl.controller.link import CombinerAnswer
from stratafl.controller.tally import check_partial, select_clients, verify_outcomes
from stratafl.errors import UpdateRejected
from stratafl.records import ClientOutcome
from stratafl.security.receipts import ReceiptKeys, Statement, make_receipt
from stratafl.status import OutcomeStatus, TaskKind

KEYS = ReceiptKeys(b"\x01" * 32)
OK = OutcomeStatus.OK


def _signed(client_id: str, combiner_id: str, examples: int, round_id: str = "r1") -> bytes:
    said = Statement(round_id, "train", client_id, combiner_id, examples, {"loss": 0.5})
    return make_receipt(KEYS.key_for(client_id), said)


def _answer(combiner_id: str, *entries: tuple[str, int, bytes], weight: float = 0.0):
    outcomes = [
        ClientOutcome(
            client_id=c, combiner_id=combiner_id, status=OK, num_examples=n, metrics={"loss": 0.5}
        )
        for c, n, _ in entries
    ]
    return CombinerAnswer(
        combiner_id=combiner_id,
        contributors=len(entries),
        total_weight=weight or float(sum(n for _, n, _ in entries)),
        outcomes=outcomes,
        receipts=[r for _, _, r in entries],
    )


def _verify(answer: CombinerAnswer, selected, counted=None, round_id="r1") -> set[str]:
    counted = set() if counted is None else counted
    verify_outcomes(
        answer,
        selected=selected,
        round_id=round_id,
        kind=TaskKind.TRAIN,
        keys=KEYS,
        counted=counted,
    )
    return counted


def test_selection_is_reproducible_from_the_seed_and_within_each_quota():
    eligible = {"a": [f"a{i}" for i in range(10)], "b": ["b0", "b1"]}
    first = select_clients(eligible, {"a": 3, "b": 5}, seed=7)
    assert first == select_clients(eligible, {"a": 3, "b": 5}, seed=7)
    assert len(first["a"]) == 3 and set(first["a"]) <= set(eligible["a"])
    assert first["b"] == ["b0", "b1"]  # a quota over what it holds takes every client
    draws = {tuple(select_clients(eligible, {"a": 3}, seed=s)["a"]) for s in range(20)}
    assert len(draws) > 1


def test_only_selected_clients_with_valid_receipts_count():
    answer = _answer(
        "a",
        ("c0", 10, _signed("c0", "a", 10)),  # honest
        ("c1", 10**15, _signed("c1", "a", 10)),  # the combiner inflated its count
        ("ghost", 10, _signed("ghost", "a", 10)),  # a valid receipt, but never selected
        ("c2", 10, b""),  # no receipt at all
        ("c3", 10, _signed("c3", "b", 10)),  # signed for another combiner
        ("c4", 10, _signed("c4", "a", 10, round_id="r0")),  # replayed from another round
    )
    counted = _verify(answer, selected=["c0", "c1", "c2", "c3", "c4"])
    assert counted == {"c0"}
    statuses = {o.client_id: o.status for o in answer.outcomes}
    assert statuses["c0"] == OK
    assert all(s == OutcomeStatus.REJECTED for c, s in statuses.items() if c != "c0")
    reasons = {o.client_id: o.reason for o in answer.outcomes}
    assert reasons["c1"] == "combiner a reported client c1 without a valid receipt"
    assert "did not select there" in reasons["ghost"]


def test_a_client_counts_once_per_round_across_combiners():
    counted = _verify(_answer("a", ("c0", 10, _signed("c0", "a", 10))), ["c0"])
    twice = _answer("b", ("c0", 10, _signed("c0", "b", 10)))
    _verify(twice, ["c0"], counted)
    assert twice.outcomes[0].status == OutcomeStatus.REJECTED
    assert "counted already" in twice.outcomes[0].reason


def test_a_partial_must_be_backed_by_verified_outcomes_only():
    honest = _answer("a", ("c0", 10, _signed("c0", "a", 10)), ("c1", 30, _signed("c1", "a", 30)))
    _verify(honest, ["c0", "c1"])
    check_partial(honest)
    inflated = _answer(
        "a",
        ("c0", 10, _signed("c0", "a", 10)),
        ("ghost", 10**15, b"\x00" * 32),
    )
    _verify(inflated, ["c0"])
    with pytest.raises(UpdateRejected, match="claims 2 contributors but reports 1 verified"):
        check_partial(inflated)
    inflated.contributors = 1  # even with a count that matches, the weight is not backed
    with pytest.raises(UpdateRejected, match="more than the 10 examples"):
        check_partial(inflated)


def test_the_weight_check_caps_claims_as_the_combiner_does():
    answer = _answer(
        "a",
        ("c0", 10, _signed("c0", "a", 10)),
        ("c1", 10, _signed("c1", "a", 10)),
        ("c2", 1000, _signed("c2", "a", 1000)),
        weight=1020.0,
    )
    _verify(answer, ["c0", "c1", "c2"])
    check_partial(answer)  # no cap: the claims back it
    with pytest.raises(UpdateRejected, match="more than the 40 examples"):
        check_partial(answer, median_cap_ratio=2.0)  # 10, 10, min(1000, 2 * 10)
    with pytest.raises(UpdateRejected, match="more than the 120 examples"):
        check_partial(answer, weight_cap=100)
    answer.total_weight = 40.0
    check_partial(answer, median_cap_ratio=2.0)
