"""Aggregation rules: hand-computed cases, properties, tiers, blocks and memmaps.

Every input array is made read-only (`tests.support.updates`), so a rule that wrote to its
inputs would fail here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stratafl.aggregate import (
    Bulyan,
    DPGaussian,
    FedAvg,
    Krum,
    Median,
    MultiKrum,
    NormBounding,
    TrimmedMean,
    weighted_mean,
)
from stratafl.aggregate import blocks as blocks_module
from stratafl.aggregate.clipping import distance
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


def scalars(values: Sequence[float]) -> list[Params]:
    """One single-coordinate update per value."""
    return [{"w": frozen(np.array([v], dtype=np.float64))} for v in values]


def value(params: Params) -> float:
    return float(params["w"][0])


ZERO = {"w": frozen(np.zeros(1))}


def rules_for(count: int) -> list[AggregationRule]:
    """Every rule, with parameters valid for ``count`` updates."""
    rules: list[AggregationRule] = [
        FedAvg(),
        Median(),
        TrimmedMean(beta=0.2),
        NormBounding(clip_norm=1.5),
        DPGaussian(clip_norm=1.5, noise_multiplier=0.5, seed=7),
    ]
    if count >= 5:
        rules += [Krum(f=1), MultiKrum(f=1), MultiKrum(f=1, m=2)]
    if count >= 7:
        rules.append(Bulyan(f=1))
    return rules


# --- hand-computed cases ---------------------------------------------------------------


def test_fedavg_is_the_weighted_mean() -> None:
    result, weight = FedAvg().aggregate(scalars([1.0, 4.0]), [3.0, 1.0], ZERO)
    assert value(result) == pytest.approx(1.75)
    assert weight == 4.0


@pytest.mark.parametrize(("values", "expected"), [([1, 2, 10], 2.0), ([1, 2, 3, 10], 2.5)])
def test_median_by_hand(values: list[float], expected: float) -> None:
    result, weight = Median().aggregate(scalars(values), [1.0] * len(values), ZERO)
    assert value(result) == expected
    assert weight == len(values)


def test_median_ignores_weights() -> None:
    result, weight = Median().aggregate(scalars([1, 2, 10]), [1.0, 1.0, 1000.0], ZERO)
    assert value(result) == 2.0
    assert weight == 1002.0


def test_trimmed_mean_by_hand() -> None:
    result, _ = TrimmedMean(beta=0.25).aggregate(scalars([100, 1, 3, 2]), [1.0] * 4, ZERO)
    assert value(result) == 2.5  # drops 1 and 100
    result, _ = TrimmedMean(beta=0.2).aggregate(scalars([100, 1, 3, 2]), [1.0] * 4, ZERO)
    assert value(result) == 26.5  # floor(0.2 * 4) = 0: nothing trimmed


def test_trimmed_mean_count_does_not_round_down() -> None:
    assert TrimmedMean(beta=0.29).trimmed(100) == 29


KRUM_POINTS = [0.0, 1.0, 2.5, 10.0, 100.0]
# f=1, n=5: each score sums the n - f - 2 = 2 smallest squared distances:
# 0 -> 1 + 6.25 = 7.25, 1 -> 1 + 2.25 = 3.25, 2.5 -> 2.25 + 6.25 = 8.5,
# 10 -> 56.25 + 81 = 137.25, 100 -> 8100 + 9506.25.


def test_krum_by_hand() -> None:
    result, weight = Krum(f=1).aggregate(scalars(KRUM_POINTS), [1.0, 2.0, 1.0, 1.0, 1.0], ZERO)
    assert value(result) == 1.0
    assert weight == 6.0


def test_multikrum_by_hand() -> None:
    weights = [1.0] * 5
    two, _ = MultiKrum(f=1, m=2).aggregate(scalars(KRUM_POINTS), weights, ZERO)
    assert value(two) == 0.5  # mean of 1 and 0
    default, _ = MultiKrum(f=1).aggregate(scalars(KRUM_POINTS), weights, ZERO)
    assert value(default) == pytest.approx((0 + 1 + 2.5 + 10) / 4)  # m = n - f = 4
    one, _ = MultiKrum(f=1, m=1).aggregate(scalars(KRUM_POINTS), weights, ZERO)
    assert value(one) == value(Krum(f=1).aggregate(scalars(KRUM_POINTS), weights, ZERO)[0])


def test_bulyan_by_hand() -> None:
    # n=7, f=1: recursive Krum selects theta = 5 updates: 2, then 1, 3, 0, 4 (the two far
    # ones never win); beta = 3 values closest to the median 2 are 1, 2, 3 -> mean 2.
    points = [50.0, 0.0, 1.0, 2.0, 3.0, 4.0, 100.0]
    result, _ = Bulyan(f=1).aggregate(scalars(points), [1.0] * 7, ZERO)
    assert value(result) == 2.0
    # asymmetric: selected 0, 1, 2, 3, 4.5 around median 2 -> closest three 1, 2, 3
    points = [0.0, 1.0, 2.0, 3.0, 4.5, 60.0, -70.0]
    result, _ = Bulyan(f=1).aggregate(scalars(points), [1.0] * 7, ZERO)
    assert value(result) == 2.0


def test_bulyan_with_no_tolerance_is_the_mean() -> None:
    result, _ = Bulyan(f=0).aggregate(scalars([1, 2, 9]), [5.0, 1.0, 1.0], ZERO)
    assert value(result) == 4.0


def test_norm_bounding_by_hand() -> None:
    reference = {"w": frozen(np.array([1.0, 1.0]))}
    updates = [
        {"w": frozen(np.array([4.0, 5.0]))},  # delta (3, 4), norm 5 -> (0.6, 0.8)
        {"w": frozen(np.array([1.3, 1.4]))},  # delta (0.3, 0.4), norm 0.5: kept
    ]
    result, weight = NormBounding(clip_norm=1.0).aggregate(updates, [1.0, 3.0], reference)
    np.testing.assert_allclose(result["w"], [1.0 + 1.5 / 4, 1.0 + 2.0 / 4])
    assert weight == 4.0


def test_norm_is_taken_over_all_tensors() -> None:
    reference = {"a": frozen(np.zeros(1)), "b": frozen(np.zeros(1))}
    update = {"a": frozen(np.array([3.0])), "b": frozen(np.array([4.0]))}
    result, _ = NormBounding(clip_norm=1.0).aggregate([update], [1.0], reference)
    assert (result["a"][0], result["b"][0]) == pytest.approx((0.6, 0.8))


def test_dp_without_noise_is_the_unweighted_clipped_mean() -> None:
    reference = {"w": frozen(np.zeros(2))}
    updates = [{"w": frozen(np.array([3.0, 4.0]))}, {"w": frozen(np.array([0.3, 0.4]))}]
    rule = DPGaussian(clip_norm=1.0, noise_multiplier=0.0)
    result, weight = rule.aggregate(updates, [1.0, 3.0], reference)
    np.testing.assert_allclose(result["w"], [0.45, 0.6])
    assert weight == 2.0  # the number of updates, not of examples


def test_dp_noise_has_the_documented_std_and_is_seeded() -> None:
    reference = {"w": frozen(np.zeros(200_000, dtype=np.float64))}
    updates = [reference] * 4
    rule = DPGaussian(clip_norm=1.0, noise_multiplier=2.0, seed=3)
    first, _ = rule.aggregate(updates, [1.0] * 4, reference)
    assert np.std(first["w"]) == pytest.approx(2.0 * 1.0 / 4, rel=0.02)
    again, _ = rule.aggregate(updates, [1.0] * 4, reference)
    np.testing.assert_array_equal(first["w"], again["w"])
    other, _ = rule.for_round(1, 0).aggregate(updates, [1.0] * 4, reference)
    assert not np.array_equal(first["w"], other["w"])


def test_dp_without_seed_draws_fresh_noise() -> None:
    reference = {"w": frozen(np.zeros(100))}
    rule = DPGaussian(clip_norm=1.0, noise_multiplier=1.0)
    a, _ = rule.aggregate([reference], [1.0], reference)
    b, _ = rule.aggregate([reference], [1.0], reference)
    assert not np.array_equal(a["w"], b["w"])


# --- parameter and input validation ----------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TrimmedMean(beta=0.5), "beta=0.5"),
        (lambda: TrimmedMean(beta=-0.1), "beta=-0.1"),
        (lambda: Krum(f=-1), "f=-1"),
        (lambda: MultiKrum(f=1, m=0), "m=0"),
        (lambda: Bulyan(f=-2), "f=-2"),
        (lambda: NormBounding(clip_norm=0.0), "clip_norm=0.0"),
        (lambda: NormBounding(clip_norm=math.inf), "clip_norm=inf"),
        (lambda: DPGaussian(noise_multiplier=-1.0), "noise_multiplier=-1.0"),
    ],
)
def test_bad_parameters_are_named(factory, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        factory()


@pytest.mark.parametrize(
    ("rule", "count", "message"),
    [
        (Krum(f=1), 4, r"krum with f=1 needs at least 5 updates \(n > 2f \+ 2\), got 4"),
        (MultiKrum(f=2), 6, r"at least 7 updates"),
        (MultiKrum(f=0, m=4), 3, r"m=4 needs at least 4"),
        (Bulyan(f=1), 6, r"bulyan with f=1 needs at least 7 updates \(n >= 4f \+ 3\), got 6"),
    ],
)
def test_too_few_updates_says_how_many(rule: AggregationRule, count: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rule.aggregate(scalars(range(count)), [1.0] * count, ZERO)


def test_min_updates_matches_what_aggregate_accepts() -> None:
    for rule in [Krum(f=2), MultiKrum(f=1, m=6), Bulyan(f=1), Median(), FedAvg()]:
        n = rule.min_updates
        rule.aggregate(scalars(range(n)), [1.0] * n, ZERO)
        if n > 1:
            with pytest.raises(ConfigError):
                rule.aggregate(scalars(range(n - 1)), [1.0] * (n - 1), ZERO)


@pytest.mark.parametrize("rule", rules_for(7), ids=lambda r: r.name)
def test_inputs_are_checked_before_arithmetic(rule: AggregationRule) -> None:
    updates = models(0, 7)
    with pytest.raises(ConfigError, match="one weight per update"):
        rule.aggregate(updates, [1.0] * 6, updates[0])
    with pytest.raises(ConfigError, match="weight of update 2"):
        rule.aggregate(updates, [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0], updates[0])
    with pytest.raises(ConfigError, match="no update"):
        rule.aggregate([], [], updates[0])
    bad = dict(updates[3])
    bad["layer.bias"] = frozen(np.zeros(5, dtype=np.float32))
    with pytest.raises(ModelFormatError, match="layer.bias"):
        rule.aggregate([*updates[:3], bad, *updates[4:]], [1.0] * 7, updates[0])


@pytest.mark.parametrize("rule", [Median(), TrimmedMean(), Krum(), MultiKrum(), Bulyan()])
def test_non_streaming_rules_refuse_to_fold(rule: AggregationRule) -> None:
    assert not rule.streaming
    with pytest.raises(ConfigError, match="call aggregate"):
        rule.fold(ZERO)


@pytest.mark.parametrize("rule", [r for r in rules_for(7) if r.streaming], ids=lambda r: r.name)
def test_fold_gives_the_same_partial_as_aggregate(rule: AggregationRule) -> None:
    updates, weights = models(1, 6), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    reference = models(2, 1)[0]
    fold = rule.fold(reference)
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    folded, folded_weight = fold.result()
    direct, direct_weight = rule.aggregate(updates, weights, reference)
    assert_params_equal(folded, direct)
    assert folded_weight == direct_weight


# --- across tiers ----------------------------------------------------------------------


@pytest.mark.parametrize("rule", rules_for(7), ids=lambda r: f"{r.name}-{r}")
def test_one_combiner_equals_the_flat_rule(rule: AggregationRule) -> None:
    updates, weights = models(3, 7), [5.0, 1.0, 2.0, 8.0, 3.0, 1.0, 4.0]
    reference = models(4, 1)[0]
    flat, flat_weight = rule.aggregate(updates, weights, reference)
    merged, merged_weight = rule.merge([flat], [flat_weight], reference)
    assert_params_equal(merged, flat)
    assert merged_weight == flat_weight


@pytest.mark.parametrize(
    "rule",
    [FedAvg(), NormBounding(clip_norm=1.5), DPGaussian(clip_norm=1.5, noise_multiplier=0.0)],
    ids=lambda r: r.name,
)
def test_linear_rules_are_exact_across_combiners(rule: AggregationRule) -> None:
    updates, weights = models(5, 7, np.float64), [5.0, 1.0, 2.0, 8.0, 3.0, 1.0, 4.0]
    reference = models(6, 1, np.float64)[0]
    flat, flat_weight = rule.aggregate(updates, weights, reference)
    groups = [(0, 3), (3, 4), (4, 7)]
    partials = [rule.aggregate(updates[a:b], weights[a:b], reference) for a, b in groups]
    merged, weight = rule.merge([p for p, _ in partials], [w for _, w in partials], reference)
    assert_params_equal(merged, flat, rtol=1e-12, atol=1e-12)
    assert weight == flat_weight


@pytest.mark.parametrize("rule", [r for r in rules_for(7) if r.streaming], ids=lambda r: r.name)
def test_streaming_rules_merge_by_the_weighted_mean(rule: AggregationRule) -> None:
    partials, weights = models(12, 3), [2.0, 5.0, 1.0]
    reference = models(13, 1)[0]
    merged, weight = rule.merge(partials, weights, reference)
    assert_params_equal(merged, weighted_mean(partials, weights), rtol=1e-6)
    assert weight == 8.0


def test_median_of_medians_is_not_the_median_but_stays_in_range() -> None:
    groups = [[1.0, 2.0, 100.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    partials = [Median().aggregate(scalars(g), [1.0] * 3, ZERO) for g in groups]
    merged, weight = Median().merge([p for p, _ in partials], [w for _, w in partials], ZERO)
    assert value(merged) == 4.0  # median(2, 4, 7); the global median is 5
    assert weight == 9.0


@pytest.mark.parametrize("rule", [Krum(f=2), MultiKrum(f=2), Bulyan(f=1)], ids=lambda r: r.name)
def test_selection_rules_average_two_partials(rule: AggregationRule) -> None:
    merged, weight = rule.merge(scalars([1.0, 4.0]), [10.0, 30.0], ZERO)
    assert value(merged) == 2.5  # unweighted: nothing can be selected from two
    assert weight == 40.0


def test_krum_across_partials_lowers_f_to_what_they_support() -> None:
    # 3 partials support f=0: Krum with one neighbour picks from the closest pair.
    merged, _ = Krum(f=3).merge(scalars([0.0, 0.5, 9.0]), [1.0] * 3, ZERO)
    assert value(merged) == 0.0
    # 5 partials support f=1: the far partial cannot win.
    merged, _ = Krum(f=3).merge(scalars(KRUM_POINTS), [1.0] * 5, ZERO)
    assert value(merged) == 1.0


# --- properties ------------------------------------------------------------------------

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


def vectors(count: int, dim: int) -> st.SearchStrategy[list[list[float]]]:
    return st.lists(st.lists(finite, min_size=dim, max_size=dim), min_size=count, max_size=count)


def as_updates(rows: list[list[float]]) -> list[Params]:
    return [{"w": frozen(np.array(r, dtype=np.float64))} for r in rows]


@FAST
@given(
    rows=st.integers(1, 8).flatmap(lambda n: vectors(n, 3)),
    data=st.data(),
)
def test_coordinate_and_linear_rules_ignore_client_order(rows, data) -> None:  # noqa: ANN001
    updates = as_updates(rows)
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=len(rows), max_size=len(rows)))
    order = data.draw(st.permutations(range(len(rows))))
    reference = {"w": frozen(np.zeros(3))}
    for rule in [FedAvg(), Median(), TrimmedMean(beta=0.3), NormBounding(clip_norm=10.0)]:
        a, wa = rule.aggregate(updates, weights, reference)
        b, wb = rule.aggregate([updates[i] for i in order], [weights[i] for i in order], reference)
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-9, atol=1e-9)
        assert wa == pytest.approx(wb)


ZERO_3 = {"w": frozen(np.zeros(3))}


@FAST
@given(rows=vectors(7, 3), data=st.data())
def test_selection_rules_ignore_client_order(rows, data) -> None:  # noqa: ANN001
    x = np.array(rows)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    scores = np.sort(np.sort(d, axis=1)[:, 1:4].sum(axis=1))  # f=2: n - f - 2 = 3 neighbours
    assume(scores[1] - scores[0] > 1e-6 * (1 + scores[0]))  # ties go to the earliest update
    updates = as_updates(rows)
    shuffled = [updates[i] for i in data.draw(st.permutations(range(7)))]
    a, _ = Krum(f=2).aggregate(updates, [1.0] * 7, ZERO_3)
    b, _ = Krum(f=2).aggregate(shuffled, [1.0] * 7, ZERO_3)
    np.testing.assert_array_equal(a["w"], b["w"])


@FAST
@given(
    rows=st.integers(1, 6).flatmap(lambda n: vectors(n, 2)),
    data=st.data(),
)
def test_fedavg_is_invariant_to_scaling_weights(rows, data) -> None:  # noqa: ANN001
    weights = data.draw(st.lists(st.floats(0.1, 100.0), min_size=len(rows), max_size=len(rows)))
    scale = data.draw(st.floats(1e-3, 1e3))
    updates = as_updates(rows)
    a, wa = FedAvg().aggregate(updates, weights, {"w": frozen(np.zeros(2))})
    b, wb = FedAvg().aggregate(updates, [w * scale for w in weights], {"w": frozen(np.zeros(2))})
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-9, atol=1e-9)
    assert wb == pytest.approx(wa * scale)


@FAST
@given(
    f=st.integers(0, 3),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
    far=st.floats(1e3, 1e6),
)
def test_krum_picks_an_honest_update_when_byzantine_ones_are_far(f, extra, seed, far) -> None:  # noqa: ANN001
    n = 2 * f + 3 + extra
    rng = np.random.default_rng(seed)
    honest = [rng.uniform(-1, 1, size=4) for _ in range(n - f)]
    byzantine = [far + rng.uniform(-far / 2, far / 2, size=4) for _ in range(f)]
    rows = honest + byzantine
    order = rng.permutation(n)
    updates = [{"w": frozen(rows[i])} for i in order]
    reference = {"w": frozen(np.zeros(4))}
    result, _ = Krum(f=f).aggregate(updates, [1.0] * n, reference)
    assert any(np.array_equal(result["w"], h) for h in honest)
    result, _ = MultiKrum(f=f).aggregate(updates, [1.0] * n, reference)
    assert np.all(np.abs(result["w"]) <= 1.0)  # the mean of n - f honest ones


@FAST
@given(
    honest_rows=st.integers(1, 7).flatmap(lambda n: vectors(n, 3)),
    byzantine=st.lists(st.sampled_from([-1e9, 1e9, 0.0, 5e3]), min_size=0, max_size=6),
    seed=st.integers(0, 1000),
)
def test_median_and_trimmed_mean_stay_in_the_honest_range(honest_rows, byzantine, seed) -> None:  # noqa: ANN001
    honest = np.array(honest_rows)
    f = min(len(byzantine), (len(honest_rows) - 1))  # f < n / 2
    bad = [[b] * 3 for b in byzantine[:f]]
    rows = list(honest_rows) + bad
    order = np.random.default_rng(seed).permutation(len(rows))
    updates = as_updates([rows[i] for i in order])
    n = len(rows)
    low, high = honest.min(axis=0) - 1e-9, honest.max(axis=0) + 1e-9
    median, _ = Median().aggregate(updates, [1.0] * n, ZERO_3)
    assert np.all((low <= median["w"]) & (median["w"] <= high))
    beta = min(0.499, f / n + 1e-6)  # trims at least f from each end
    assume(math.floor(beta * n + 1e-9) >= f)
    trimmed, _ = TrimmedMean(beta=beta).aggregate(updates, [1.0] * n, ZERO_3)
    assert np.all((low <= trimmed["w"]) & (trimmed["w"] <= high))


@FAST
@given(rows=st.integers(1, 6).flatmap(lambda n: vectors(n, 3)), clip=st.floats(1e-3, 1e3))
def test_norm_bound_holds_after_clipping(rows, clip) -> None:  # noqa: ANN001
    reference = {"w": frozen(np.array([0.5, -0.5, 2.0]))}
    updates = as_updates(rows)
    rule = NormBounding(clip_norm=clip)
    for update in updates:
        clipped, _ = rule.aggregate([update], [1.0], reference)
        assert distance(clipped, reference) <= clip * (1 + 1e-9)
    result, _ = rule.aggregate(updates, [1.0] * len(updates), reference)
    assert distance(result, reference) <= clip * (1 + 1e-9)


# --- blocks and memmaps ----------------------------------------------------------------


@pytest.mark.parametrize("rule", rules_for(7), ids=lambda r: f"{r.name}-{r}")
def test_blockwise_equals_direct(rule: AggregationRule, monkeypatch: pytest.MonkeyPatch) -> None:
    updates, weights = wide_models(8, 7), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    reference = wide_models(9, 1)[0]
    direct, direct_weight = rule.aggregate(updates, weights, reference)
    monkeypatch.setattr(blocks_module, "BLOCK_ELEMENTS", 5)
    blocked, blocked_weight = rule.aggregate(updates, weights, reference)
    assert_params_equal(blocked, direct, rtol=1e-6, atol=1e-9)
    assert blocked_weight == direct_weight


@pytest.mark.parametrize("rule", rules_for(7), ids=lambda r: f"{r.name}-{r}")
def test_memmapped_updates_give_the_same_result(
    rule: AggregationRule,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    updates, weights = wide_models(10, 7), [1.0] * 7
    reference = wide_models(11, 1)[0]
    mapped = memmapped(updates, tmp_path)
    in_memory, _ = rule.aggregate(updates, weights, reference)
    monkeypatch.setattr(blocks_module, "BLOCK_ELEMENTS", 16)
    from_disk, _ = rule.aggregate(mapped, weights, reference)
    assert_params_equal(from_disk, in_memory, rtol=1e-6, atol=1e-9)
    for name, array in from_disk.items():
        assert type(array) is np.ndarray, name  # an owned array, not a view of a file


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), offset=st.sampled_from([0.0, 1e4]))
def test_pairwise_distances_equal_the_direct_sum_even_far_from_zero(seed, n, offset):
    from stratafl.aggregate.krum import pairwise_sq_distances
    from stratafl.params import specs_of

    rng = np.random.default_rng(seed)
    updates = [{"w": (offset + rng.normal(size=(7, 3))).astype(np.float64)} for _ in range(n)]
    direct = np.array(
        [[np.sum((a["w"] - b["w"]) ** 2) for b in updates] for a in updates], dtype=np.float64
    )
    got = pairwise_sq_distances(updates, specs_of(updates[0]))
    np.testing.assert_allclose(got, direct, rtol=1e-9, atol=1e-6)
