"""Backdoor defences: FLAME and the Robust Learning Rate, against independent computations
of their papers' definitions, with properties and the rule contract (blocks, memmaps,
tiers). Every input array is read-only, so a rule that wrote to its inputs would fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratafl.aggregate import FedAvg, Flame, RobustLR, weighted_mean
from stratafl.aggregate import blocks as blocks_module
from stratafl.aggregate.clipping import distance
from stratafl.aggregate.flame import cosine_distances
from stratafl.aggregate.rule import AggregationRule
from stratafl.errors import ConfigError, ModelFormatError
from stratafl.params import Params
from tests.support.updates import (
    FAST,
    assert_params_equal,
    frozen,
    memmapped,
    models,
    wide_models,
)

# --- FLAME: the paper, computed independently ------------------------------------------


def as_vector(params: Params) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in params.values()])


def paper_flame(
    updates: list[Params],
    reference: Params,
    noise_lambda: float,
    noise: np.random.Generator,
    on_models: bool = False,
) -> tuple[Params, list[int]]:
    """Algorithm 1 of Nguyen et al. 2022 on flattened vectors, with scikit-learn's HDBSCAN
    called directly: the admitted indices and the new global model."""
    from sklearn.cluster import HDBSCAN

    g = as_vector(reference)
    models_ = np.stack([as_vector(u) for u in updates])
    deltas = models_ - g
    vectors = models_ if on_models else deltas
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(cosine, 0.0)
    n = len(updates)
    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        allow_single_cluster=True,
        metric="precomputed",
        copy=True,
    ).fit_predict(cosine)
    admitted = [i for i in range(n) if labels[i] >= 0]
    norms = np.linalg.norm(deltas, axis=1)
    bound = np.median(norms)
    clipped = [g + deltas[i] * min(1.0, bound / norms[i]) for i in admitted]
    flat_result = np.mean(clipped, axis=0)
    result: Params = {}
    start = 0
    for name, array in reference.items():
        size = array.size
        part = flat_result[start : start + size]
        part = part + noise.normal(0.0, noise_lambda * bound, size=size)
        result[name] = part.reshape(array.shape).astype(array.dtype)
        start += size
    return result, admitted


def backdoor_round(seed: int, dtype: type = np.float64) -> tuple[list[Params], Params]:
    """10 clients: 7 honest ones train along a shared direction (norms 0.5 to 2), 3 attackers
    add a large push in a direction of their own (a backdoor-like update)."""
    rng = np.random.default_rng(seed)
    reference = {
        "layer.weight": frozen(rng.normal(size=(6, 5)).astype(dtype)),
        "layer.bias": frozen(rng.normal(size=(5,)).astype(dtype)),
    }
    honest_direction, backdoor_direction = rng.normal(size=35), rng.normal(size=35)
    updates = []
    for client in range(10):
        delta = honest_direction + 0.3 * rng.normal(size=35)
        if client >= 7:
            delta = 0.3 * delta + 2.0 * backdoor_direction
        delta *= rng.uniform(0.5, 2.0) / np.linalg.norm(delta)
        updates.append(
            {
                "layer.weight": frozen(reference["layer.weight"] + delta[:30].reshape(6, 5)),
                "layer.bias": frozen(reference["layer.bias"] + delta[30:]),
            }
        )
    return updates, reference


def noise_of(seed: int, key: tuple[int, ...]) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flame_with_one_combiner_is_the_paper_and_rejects_the_backdoor(seed: int) -> None:
    updates, reference = backdoor_round(seed)
    weights = [float(w) for w in range(10, 20)]  # ignored by default, as in the paper
    rule = Flame(noise_lambda=0.01, seed=5).for_round(3, 17)
    partial, weight = rule.aggregate(updates, weights, reference)
    merged, merged_weight = rule.merge([partial], [weight], reference)
    expected, admitted = paper_flame(updates, reference, 0.01, noise_of(5, (3, 17)))
    assert not {7, 8, 9} & set(admitted)
    assert len(admitted) >= 6  # a majority: more than n / 2
    assert rule.screen(updates, reference).admitted == tuple(admitted)
    assert_params_equal(merged, partial, rtol=1e-15)  # x * w / w: exact in float32 only
    assert_params_equal(merged, expected, rtol=1e-12, atol=1e-12)
    assert merged_weight == weight == len(admitted)


def test_flame_on_models_is_the_literal_algorithm() -> None:
    updates, reference = backdoor_round(4)
    rule = Flame(noise_lambda=0.01, cluster_models=True, seed=2)
    result, weight = rule.aggregate(updates, [1.0] * 10, reference)
    expected, admitted = paper_flame(updates, reference, 0.01, noise_of(2, ()), on_models=True)
    assert_params_equal(result, expected, rtol=1e-10, atol=1e-10)
    assert weight == len(admitted)


def test_flame_clips_at_the_median_norm_by_hand() -> None:
    # one direction, norms 1, 2, 10: all in one cluster, S = 2, clipped 1, 2, 2 -> mean 5/3
    direction = np.array([0.6, 0.8])
    reference = {"w": frozen(np.array([1.0, -1.0]))}
    updates = [{"w": frozen(reference["w"] + e * direction)} for e in (1.0, 2.0, 10.0)]
    rule = Flame(noise_lambda=0.0)
    screening = rule.screen(updates, reference)
    assert screening.admitted == (0, 1, 2)
    assert screening.clip_bound == pytest.approx(2.0)
    result, weight = rule.aggregate(updates, [1.0, 1.0, 1.0], reference)
    np.testing.assert_allclose(result["w"], reference["w"] + 5.0 / 3.0 * direction)
    assert weight == 3.0


def test_flame_can_weight_the_admitted_by_examples() -> None:
    direction = np.array([0.6, 0.8])
    reference = {"w": frozen(np.zeros(2))}
    updates = [{"w": frozen(e * direction)} for e in (1.0, 2.0, 10.0)]
    result, weight = Flame(noise_lambda=0.0, weight_by_examples=True).aggregate(
        updates, [3.0, 1.0, 4.0], reference
    )
    np.testing.assert_allclose(result["w"], (3 * 1 + 1 * 2 + 4 * 2) / 8 * direction)
    assert weight == 8.0


def test_flame_noise_has_std_lambda_times_the_median_norm_and_is_keyed() -> None:
    size = 200_000
    unit = np.zeros(size)
    unit[0] = 1.0
    reference = {"w": frozen(np.zeros(size)), "steps": frozen(np.arange(3))}
    updates = [{"w": frozen(e * unit), "steps": reference["steps"]} for e in (1.0, 3.0, 4.0)]
    rule = Flame(noise_lambda=0.01, seed=9)
    first, _ = rule.aggregate(updates, [1.0] * 3, reference)
    assert np.std(first["w"][1:]) == pytest.approx(0.01 * 3.0, rel=0.02)  # S = median = 3
    np.testing.assert_array_equal(first["steps"], reference["steps"])  # no noise on integers
    again, _ = rule.aggregate(updates, [1.0] * 3, reference)
    np.testing.assert_array_equal(first["w"], again["w"])
    for other_rule in [rule.for_round(1, 0), rule.for_round(0, 1), Flame(noise_lambda=0.01)]:
        other, _ = other_rule.aggregate(updates, [1.0] * 3, reference)
        assert not np.array_equal(first["w"], other["w"])


def test_flame_admits_a_boosted_honest_direction_and_clipping_bounds_it() -> None:
    updates, reference = backdoor_round(0)
    boosted = {
        name: frozen(reference[name] + 50.0 * (updates[1][name] - reference[name]))
        for name in reference
    }
    inputs = [*updates[:7], boosted]
    rule = Flame(noise_lambda=0.0)
    screening = rule.screen(inputs, reference)
    assert 7 in screening.admitted  # same direction: clustering cannot tell
    result, _ = rule.aggregate(inputs, [1.0] * 8, reference)
    assert distance(result, reference) <= screening.clip_bound * (1 + 1e-12)


def test_flame_across_combiners_is_the_mean_weighted_by_admitted_counts() -> None:
    updates, reference = backdoor_round(1)
    rule = Flame(noise_lambda=0.0)
    groups = [(0, 5), (5, 10)]
    partials = [rule.aggregate(updates[a:b], [1.0] * (b - a), reference) for a, b in groups]
    merged, weight = rule.merge([p for p, _ in partials], [w for _, w in partials], reference)
    expected = weighted_mean([p for p, _ in partials], [w for _, w in partials])
    assert_params_equal(merged, expected, rtol=1e-12)
    assert weight == sum(w for _, w in partials)
    bounds = [rule.screen(updates[a:b], reference).clip_bound for a, b in groups]
    assert distance(merged, reference) <= max(bounds) * (1 + 1e-12)


def test_cosine_distance_of_a_zero_update_is_one() -> None:
    gram = np.array([[0.0, 0.0, 0.0], [0.0, 4.0, 2.0], [0.0, 2.0, 1.0]])
    np.testing.assert_allclose(cosine_distances(gram), [[0, 1, 1], [1, 0, 0], [1, 0, 0]])


def test_flame_refuses_what_it_cannot_run() -> None:
    updates, reference = backdoor_round(0)
    with pytest.raises(ConfigError, match=r"flame needs at least 3 updates .*got 2"):
        Flame().aggregate(updates[:2], [1.0, 1.0], reference)
    with pytest.raises(ConfigError, match="noise_lambda=-0.1"):
        Flame(noise_lambda=-0.1)
    with pytest.raises(ConfigError, match="seed=-1"):
        Flame(seed=-1)
    with pytest.raises(ConfigError, match="call aggregate"):
        Flame().fold(reference)


def test_flame_without_a_majority_cluster_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import sklearn.cluster

    class NoCluster:
        def __init__(self, **settings: object) -> None:
            pass

        def fit_predict(self, distances: np.ndarray) -> np.ndarray:
            return np.full(len(distances), -1)

    monkeypatch.setattr(sklearn.cluster, "HDBSCAN", NoCluster)
    updates, reference = backdoor_round(0)
    with pytest.raises(ConfigError, match="no cluster of more than half of the 10 updates"):
        Flame().aggregate(updates, [1.0] * 10, reference)


# --- FLAME: properties -----------------------------------------------------------------


def random_updates(seed: int, count: int, dim: int) -> tuple[list[Params], Params]:
    rng = np.random.default_rng(seed)
    reference = {"w": frozen(rng.normal(size=dim))}
    scales = rng.uniform(0.01, 100.0, size=count)
    updates = [{"w": frozen(reference["w"] + s * rng.normal(size=dim))} for s in scales]
    return updates, reference


@FAST
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(3, 9), dim=st.integers(1, 6))
def test_flame_stays_within_the_median_norm_before_noise(seed: int, count: int, dim: int) -> None:
    updates, reference = random_updates(seed, count, dim)
    median_norm = np.median([distance(u, reference) for u in updates])
    result, weight = Flame(noise_lambda=0.0).aggregate(updates, [1.0] * count, reference)
    assert distance(result, reference) <= median_norm * (1 + 1e-9)
    assert count // 2 + 1 <= weight <= count


@FAST
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(3, 9), data=st.data())
def test_flame_ignores_client_order_and_weights(seed: int, count: int, data) -> None:  # noqa: ANN001
    updates, reference = random_updates(seed, count, 4)
    # continuous random updates: no tie in HDBSCAN's tree, so no order can break one
    order = data.draw(st.permutations(range(count)))
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=count, max_size=count))
    rule = Flame(noise_lambda=0.01, seed=1)
    a, wa = rule.aggregate(updates, [1.0] * count, reference)
    b, wb = rule.aggregate([updates[i] for i in order], weights, reference)
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-9, atol=1e-9)
    assert wa == wb


# --- RLR -------------------------------------------------------------------------------


def test_rlr_by_hand() -> None:
    reference = {"w": frozen(np.array([1.0, 1.0, 1.0]))}
    deltas = [[1.0, 1.0, 0.0], [2.0, -1.0, 0.0], [3.0, 1.0, 0.0], [2.0, -3.0, 0.0]]
    updates = [{"w": frozen(reference["w"] + np.array(d))} for d in deltas]
    weights = [1.0, 1.0, 1.0, 5.0]
    result, weight = RobustLR(theta=3, server_lr=0.5).aggregate(updates, weights, reference)
    # weighted mean delta (16/8, -14/8, 0); votes (4, -2, 0): only coordinate 0 keeps +eta
    np.testing.assert_allclose(result["w"], [1.0 + 0.5 * 2.0, 1.0 - 0.5 * -1.75, 1.0])
    assert weight == 8.0


def test_rlr_counts_one_vote_per_client_whatever_its_weight() -> None:
    reference = {"w": frozen(np.zeros(1))}
    updates = [{"w": frozen(np.array([d]))} for d in (1.0, 1.0, -1.0)]
    result, _ = RobustLR(theta=2).aggregate(updates, [1.0, 1.0, 1000.0], reference)
    # votes 1 + 1 - 1 = 1 < 2: the step on the mean (1 + 1 - 1000) / 1002 is reversed
    assert result["w"][0] == pytest.approx(998.0 / 1002.0)


def test_rlr_refuses_what_it_cannot_run() -> None:
    reference = {"w": frozen(np.zeros(2))}
    with pytest.raises(ConfigError, match=r"rlr with theta=4 needs at least 4 updates"):
        RobustLR(theta=4).aggregate([reference] * 3, [1.0] * 3, reference)
    assert RobustLR(theta=6).min_updates == 6
    with pytest.raises(ConfigError, match="theta=0"):
        RobustLR(theta=0)
    with pytest.raises(ConfigError, match="server_lr=0.0"):
        RobustLR(server_lr=0.0)


def signed_rows(rows: list[list[float]], signs: list[float]) -> list[list[float]]:
    """Every row given the same sign pattern, and no zero: all clients agree."""
    return [[s * (abs(v) + 1e-3) for v, s in zip(row, signs, strict=True)] for row in rows]


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


@FAST
@given(
    count=st.integers(1, 8),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3),
    data=st.data(),
)
def test_rlr_is_fedavg_when_every_client_agrees(count: int, signs, data) -> None:  # noqa: ANN001
    rows = data.draw(
        st.lists(st.lists(finite, min_size=3, max_size=3), min_size=count, max_size=count)
    )
    theta = data.draw(st.integers(1, count))
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=count, max_size=count))
    reference = {"w": frozen(np.array([0.5, -2.0, 7.0]))}
    updates = [{"w": frozen(reference["w"] + np.array(r))} for r in signed_rows(rows, signs)]
    rlr, rlr_weight = RobustLR(theta=theta).aggregate(updates, weights, reference)
    fedavg, fedavg_weight = FedAvg().aggregate(updates, weights, reference)
    np.testing.assert_allclose(rlr["w"], fedavg["w"], rtol=1e-9, atol=1e-9)
    assert rlr_weight == fedavg_weight


@FAST
@given(count=st.integers(1, 8), data=st.data())
def test_rlr_reverses_exactly_the_coordinates_without_enough_agreement(count: int, data) -> None:  # noqa: ANN001
    rows = data.draw(
        st.lists(
            st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.25, 3.0]), min_size=5, max_size=5),
            min_size=count,
            max_size=count,
        )
    )
    theta = data.draw(st.integers(1, count))
    eta = data.draw(st.floats(0.1, 2.0))
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=count, max_size=count))
    order = data.draw(st.permutations(range(count)))
    reference = {"w": frozen(np.linspace(-1.0, 1.0, 5))}
    deltas = np.array(rows)
    updates = [{"w": frozen(reference["w"] + d)} for d in deltas]
    votes = np.abs(np.sign(deltas).sum(axis=0))
    mean = np.average(deltas, axis=0, weights=weights)
    expected = reference["w"] + np.where(votes >= theta, eta, -eta) * mean
    rule = RobustLR(theta=theta, server_lr=eta)
    result, _ = rule.aggregate(updates, weights, reference)
    np.testing.assert_allclose(result["w"], expected, rtol=1e-9, atol=1e-9)
    shuffled, _ = rule.aggregate(
        [updates[i] for i in order], [weights[i] for i in order], reference
    )
    np.testing.assert_allclose(shuffled["w"], result["w"], rtol=1e-9, atol=1e-9)


def test_rlr_across_combiners_counts_votes_per_combiner() -> None:
    reference = {"w": frozen(np.zeros(2))}
    # coordinate 0: every client agrees; coordinate 1: combiner A (+, +, +), B (+, -, -)
    deltas = [[2.0, 1.0], [1.0, 1.0], [3.0, 1.0], [1.0, 1.0], [2.0, -1.0], [3.0, -1.0]]
    updates = [{"w": frozen(np.array(d))} for d in deltas]
    rule = RobustLR(theta=2)
    flat, _ = rule.aggregate(updates, [1.0] * 6, reference)
    np.testing.assert_allclose(flat["w"], [2.0, 1.0 / 3.0])  # votes (6, 2): both kept
    partials = [rule.aggregate(updates[a:b], [1.0] * 3, reference) for a, b in [(0, 3), (3, 6)]]
    np.testing.assert_allclose(partials[1][0]["w"], [2.0, 1.0 / 3.0])  # votes -1: reversed
    merged, weight = rule.merge([p for p, _ in partials], [w for _, w in partials], reference)
    np.testing.assert_allclose(merged["w"], [2.0, (1.0 + 1.0 / 3.0) / 2])  # flat: 1/3
    assert weight == 6.0


# --- the rule contract, for both -------------------------------------------------------

CONTRACT_RULES: list[AggregationRule] = [
    Flame(noise_lambda=0.01, seed=7),
    Flame(noise_lambda=0.01, weight_by_examples=True, cluster_models=True, seed=7),
    RobustLR(theta=3, server_lr=0.8),
]


def rule_id(rule: AggregationRule) -> str:
    return repr(rule)


@pytest.mark.parametrize("rule", CONTRACT_RULES, ids=rule_id)
def test_one_combiner_equals_the_flat_rule(rule: AggregationRule) -> None:
    updates, weights = models(3, 7), [5.0, 1.0, 2.0, 8.0, 3.0, 1.0, 4.0]
    reference = models(4, 1)[0]
    flat, flat_weight = rule.aggregate(updates, weights, reference)
    merged, merged_weight = rule.merge([flat], [flat_weight], reference)
    assert_params_equal(merged, flat)
    assert merged_weight == flat_weight


@pytest.mark.parametrize("rule", CONTRACT_RULES, ids=rule_id)
def test_inputs_are_checked_before_arithmetic(rule: AggregationRule) -> None:
    updates = models(0, 7)
    with pytest.raises(ConfigError, match="one weight per update"):
        rule.aggregate(updates, [1.0] * 6, updates[0])
    with pytest.raises(ConfigError, match="weight of update 2"):
        rule.aggregate(updates, [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0], updates[0])
    bad = dict(updates[3])
    bad["layer.bias"] = frozen(np.zeros(5, dtype=np.float32))
    with pytest.raises(ModelFormatError, match="layer.bias"):
        rule.aggregate([*updates[:3], bad, *updates[4:]], [1.0] * 7, updates[0])


def test_rlr_fold_gives_the_same_partial_as_aggregate() -> None:
    rule = RobustLR(theta=3)
    updates, weights = models(1, 6), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    reference = models(2, 1)[0]
    fold = rule.fold(reference)
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    assert_params_equal(fold.result()[0], rule.aggregate(updates, weights, reference)[0])
    merged, weight = rule.merge(models(5, 3), [2.0, 5.0, 1.0], reference)
    assert_params_equal(merged, weighted_mean(models(5, 3), [2.0, 5.0, 1.0]), rtol=1e-6)
    assert weight == 8.0


@pytest.mark.parametrize("rule", CONTRACT_RULES, ids=rule_id)
def test_blockwise_and_memmapped_equal_direct(
    rule: AggregationRule,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    updates, weights = wide_models(8, 7), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    reference = wide_models(9, 1)[0]
    direct, direct_weight = rule.aggregate(updates, weights, reference)
    mapped = memmapped(updates, tmp_path)
    monkeypatch.setattr(blocks_module, "BLOCK_ELEMENTS", 5)
    blocked, blocked_weight = rule.aggregate(mapped, weights, reference)
    assert_params_equal(blocked, direct, rtol=1e-6, atol=1e-9)
    assert blocked_weight == direct_weight
    for name, array in blocked.items():
        assert type(array) is np.ndarray, name
