"""Rules that keep some updates and drop others say which they dropped, and the combiner's
collector turns that into a reason per task.

The report must describe the result, not a second guess at it: for every input the rule
either used it or names it as left out, and the result is the one `aggregate` gives.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate import (
    Bulyan,
    FedAvg,
    Flame,
    Krum,
    Median,
    MultiKrum,
    SelectsInputs,
)
from stratafl.aggregate.rule import plain_mean
from stratafl.collect.collector import Collector
from stratafl.experiments.poisoning import left_out_shares
from stratafl.modelfile.codec import save_params
from stratafl.params import Params, specs_of


def updates_around(seed: int, count: int, outlier: float | None = None) -> list[Params]:
    """``count`` updates of two tensors near 1.0; the last one shifted by ``outlier``."""
    rng = np.random.default_rng(seed)
    updates = [
        {
            "w": (1.0 + 0.1 * rng.standard_normal(12)).astype(np.float32),
            "b": (1.0 + 0.1 * rng.standard_normal(3)).astype(np.float32),
        }
        for _ in range(count)
    ]
    if outlier is not None:
        updates[-1] = {name: array + np.float32(outlier) for name, array in updates[-1].items()}
    return updates


def zeros_like(update: Params) -> Params:
    return {name: np.zeros_like(array) for name, array in update.items()}


SELECTING = [Krum(f=1), MultiKrum(f=1), MultiKrum(f=1, m=3), Bulyan(f=1)]


@pytest.mark.parametrize("rule", SELECTING, ids=lambda r: repr(r))
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), count=st.integers(7, 11))
def test_the_report_names_exactly_the_inputs_the_result_did_not_use(rule, seed, count) -> None:  # noqa: ANN001
    updates = updates_around(seed, count)
    weights = [float(10 + i) for i in range(count)]
    reference = zeros_like(updates[0])
    params, weight, left_out = rule.aggregate_selecting(updates, weights, reference)
    expected, expected_weight = rule.aggregate(updates, weights, reference)
    for name in expected:
        np.testing.assert_array_equal(params[name], expected[name])
    assert weight == expected_weight
    kept = [i for i in range(count) if i not in left_out]
    assert set(left_out) <= set(range(count)) and all(left_out.values())
    if isinstance(rule, Krum):
        assert len(kept) == 1
        for name in params:
            np.testing.assert_array_equal(params[name], updates[kept[0]][name])
    elif isinstance(rule, MultiKrum):
        assert len(kept) == rule.selected(count)
        mean = plain_mean([updates[i] for i in kept], specs_of(reference))
        for name in params:
            np.testing.assert_array_equal(params[name], mean[name])
    else:  # Bulyan drops 2f whole updates; what it trims per coordinate is not reported
        assert len(left_out) == 2 * rule.f


@pytest.mark.parametrize("rule", SELECTING, ids=lambda r: repr(r))
def test_a_far_update_is_among_those_left_out(rule) -> None:  # noqa: ANN001
    updates = updates_around(0, 7, outlier=50.0)
    _, _, left_out = rule.aggregate_selecting(updates, [1.0] * 7, zeros_like(updates[0]))
    assert 6 in left_out
    assert rule.name in left_out[6]


def test_flame_leaves_out_an_update_that_points_the_other_way() -> None:
    updates = updates_around(1, 7)
    updates[3] = {name: -array for name, array in updates[3].items()}
    reference = zeros_like(updates[0])
    rule = Flame(noise_lambda=0.0)
    params, weight, left_out = rule.aggregate_selecting(updates, [1.0] * 7, reference)
    assert 3 in left_out and "majority cluster" in left_out[3]
    assert weight == 7 - len(left_out)
    expected, _ = rule.aggregate(updates, [1.0] * 7, reference)
    for name in params:
        np.testing.assert_array_equal(params[name], expected[name])


def test_rules_that_use_every_update_do_not_claim_to_select() -> None:
    assert not isinstance(FedAvg(), SelectsInputs)
    assert not isinstance(Median(), SelectsInputs)
    assert all(isinstance(rule, SelectsInputs) for rule in [*SELECTING, Flame()])


def test_the_collector_reports_left_out_inputs_by_the_key_they_came_with(tmp_path: Path) -> None:
    updates = updates_around(2, 6, outlier=-40.0)
    reference = zeros_like(updates[0])
    collector = Collector.for_updates(MultiKrum(f=1), reference)
    for i, update in enumerate(updates):
        staged = tmp_path / f"update-{i}.safetensors"
        save_params(staged, update)
        collector.add(staged, 1.0, key=f"task-{i}")
    collector.result()
    collector.discard()
    assert list(collector.left_out) == ["task-5"]
    assert "ranked 6 of 6" in collector.left_out["task-5"]


def test_a_streaming_rule_leaves_nobody_out(tmp_path: Path) -> None:
    updates = updates_around(3, 4, outlier=40.0)
    collector = Collector.for_updates(FedAvg(), zeros_like(updates[0]))
    for i, update in enumerate(updates):
        staged = tmp_path / f"update-{i}.safetensors"
        save_params(staged, update)
        collector.add(staged, 1.0, key=f"task-{i}")
    collector.result()
    assert collector.left_out == {}


def test_studies_count_whose_accepted_updates_were_left_out() -> None:
    # two rounds as the report gives them: client-2 attacks and is left out once; client-0
    # is left out once; a rejected update counts for neither share
    def outcome(client: str, status: str = "ok", left_out: str = "") -> dict[str, str]:
        return {"client_id": client, "status": status, "left_out": left_out}

    rounds = [
        SimpleNamespace(
            outcomes=[outcome("client-0"), outcome("client-1"), outcome("client-2", left_out="x")]
        ),
        SimpleNamespace(
            outcomes=[
                outcome("client-0", left_out="x"),
                outcome("client-1", status="rejected"),
                outcome("client-2"),
            ]
        ),
    ]
    shares = left_out_shares(rounds, attackers=[2])
    assert shares == {"attackers_left_out": 0.5, "honest_left_out": 1 / 3}
    nobody = left_out_shares(rounds, attackers=[])
    assert math.isnan(nobody["attackers_left_out"]) and nobody["honest_left_out"] == 2 / 5
