"""Partial updates in the aggregation maths: FedAvg's weighted mean per tensor.

Tensor t of the new model is the weighted mean over the updates that sent t, and the
reference's value if none did. The oracle below computes that directly with numpy; the
folds must equal it flat and over any split into combiners (whose partials carry one weight
sum per tensor), and be ordinary FedAvg when every update is full.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate import (
    Bulyan,
    DPGaussian,
    FedAvg,
    Flame,
    Krum,
    Median,
    MultiKrum,
    NormBounding,
    RobustLR,
    TrimmedMean,
)
from stratafl.aggregate.fedavg import require_partial_updates
from stratafl.aggregate.mean import WeightedMeanFold, weighted_mean
from stratafl.errors import ConfigError, ModelFormatError
from stratafl.params import TensorSpec, check_subset_layout, specs_of

SHAPES = {"a": (3, 4), "b": (5,), "c": (), "d": (2, 2)}


def _reference(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in SHAPES.items()}


def _update(rng: np.random.Generator, names: list[str]) -> dict[str, np.ndarray]:
    return {name: rng.normal(size=SHAPES[name]).astype(np.float32) for name in names}


def _oracle(updates, weights, reference):
    """The definition, per tensor, in float64 (np.average over the updates that sent it)."""
    out = {}
    for name, value in reference.items():
        senders = [(u[name], w) for u, w in zip(updates, weights, strict=True) if name in u]
        if not senders:
            out[name] = value
            continue
        stacked = np.stack([np.asarray(x, np.float64) for x, _ in senders])
        out[name] = np.average(stacked, axis=0, weights=[w for _, w in senders])
    return out


subsets = st.lists(st.sampled_from(sorted(SHAPES)), min_size=1, max_size=len(SHAPES), unique=True)
clients = st.lists(st.tuples(subsets, st.integers(1, 5000)), min_size=1, max_size=10)


def _clients_updates(seed, spec):
    rng = np.random.default_rng(seed + 1)
    return [_update(rng, names) for names, _ in spec], [w for _, w in spec]


def _hand_on(fold: WeightedMeanFold):
    """What a combiner sends the reducer (as `Collector.partial_result` does): the tensors
    some update held, the total weight, and the per-tensor sums unless all are the total."""
    mean, total = fold.result()
    sums = fold.tensor_weights()
    if all(weight == total for weight in sums.values()):
        return mean, total, None
    held = {name: weight for name, weight in sums.items() if weight > 0}
    return {name: mean[name] for name in held}, total, held


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 10_000), spec=clients)
def test_fedavg_of_partial_updates_is_the_per_tensor_weighted_mean(seed, spec):
    reference = _reference(seed)
    updates, weights = _clients_updates(seed, spec)
    mean, total = FedAvg().aggregate(updates, weights, reference)
    assert total == sum(weights)
    expected = _oracle(updates, weights, reference)
    for name, value in expected.items():
        assert mean[name].dtype == np.float32 and mean[name].shape == SHAPES[name]
        np.testing.assert_allclose(mean[name], value, rtol=2e-6, atol=2e-6)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    spec=clients,
    cuts=st.lists(st.integers(0, 10), max_size=4),
)
def test_hierarchical_equals_flat_over_any_split_into_combiners(seed, spec, cuts):
    """Combiners fold their clients' partial updates; the reducer adds each combiner's
    partial with its per-tensor weight sums: the result is the flat per-tensor mean."""
    reference = _reference(seed)
    updates, weights = _clients_updates(seed, spec)
    bounds = sorted({0, len(updates), *(min(c, len(updates)) for c in cuts)})
    reducer = FedAvg().partial_fold(reference)
    assert isinstance(reducer, WeightedMeanFold)
    for start, stop in zip(bounds, bounds[1:], strict=False):
        combiner = FedAvg().fold(reference)
        for update, weight in zip(updates[start:stop], weights[start:stop], strict=True):
            combiner.add(update, weight)
        partial, total, tensor_weights = _hand_on(combiner)
        reducer.add(partial, total, tensor_weights=tensor_weights)
    hierarchical, total = reducer.result()
    flat, flat_total = FedAvg().aggregate(updates, weights, reference)
    assert total == flat_total == sum(weights)
    for name in reference:
        np.testing.assert_allclose(hierarchical[name], flat[name], rtol=4e-6, atol=4e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), weights=st.lists(st.integers(1, 5000), min_size=1, max_size=8))
def test_full_updates_are_ordinary_fedavg_and_carry_no_tensor_weights(seed, weights):
    reference = _reference(seed)
    rng = np.random.default_rng(seed)
    updates = [_update(rng, sorted(SHAPES)) for _ in weights]
    fold = FedAvg().fold(reference)
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    assert fold.tensor_weights() == dict.fromkeys(SHAPES, float(sum(weights)))
    mean, total, tensor_weights = _hand_on(fold)
    assert tensor_weights is None and set(mean) == set(SHAPES) and total == sum(weights)
    direct = weighted_mean(updates, weights)
    for name in SHAPES:
        np.testing.assert_allclose(mean[name], direct[name], rtol=1e-6, atol=1e-6)


without_b = st.lists(st.sampled_from(["a", "c", "d"]), min_size=1, max_size=3, unique=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    spec=st.lists(st.tuples(without_b, st.integers(1, 5000)), min_size=1, max_size=10),
)
def test_a_tensor_nobody_sent_keeps_the_reference_bit_for_bit(seed, spec):
    reference = _reference(seed)
    updates, weights = _clients_updates(seed, spec)
    mean, _ = FedAvg().aggregate(updates, weights, reference)
    np.testing.assert_array_equal(mean["b"], reference["b"])
    fold = FedAvg().fold(reference)
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    assert fold.tensor_weights()["b"] == 0
    partial, _, tensor_weights = _hand_on(fold)
    assert "b" not in partial and tensor_weights is not None and "b" not in tensor_weights


def test_a_partial_update_counts_only_in_the_tensors_it_sent():
    reference = {"x": np.zeros(2, np.float32), "y": np.zeros(2, np.float32)}
    updates = [
        {"x": np.full(2, 1, np.float32), "y": np.full(2, 1, np.float32)},
        {"x": np.full(2, 4, np.float32)},
    ]
    mean, total = FedAvg().aggregate(updates, [1, 2], reference)
    np.testing.assert_array_equal(mean["x"], 3.0)  # (1 * 1 + 2 * 4) / 3
    np.testing.assert_array_equal(mean["y"], 1.0)  # the first update alone: not diluted
    assert total == 3


def test_inputs_are_never_modified():
    reference = _reference(1)
    updates = [
        _update(np.random.default_rng(2), ["a", "c"]),
        _update(np.random.default_rng(3), ["b"]),
    ]
    before = [{k: v.copy() for k, v in u.items()} for u in updates]
    ref_before = {k: v.copy() for k, v in reference.items()}
    mean, _ = FedAvg().aggregate(updates, [2, 3], reference)
    mean["d"][...] = 99  # the kept reference value is a copy, not the reference itself
    for update, copy in zip(updates, before, strict=True):
        for name in update:
            np.testing.assert_array_equal(update[name], copy[name])
    for name in reference:
        np.testing.assert_array_equal(reference[name], ref_before[name])


OTHER_RULES = [
    Median(),
    TrimmedMean(beta=0.1),
    Krum(f=0),
    MultiKrum(f=0, m=2),
    Bulyan(f=0),
    NormBounding(clip_norm=1.0),
    DPGaussian(clip_norm=1.0, noise_multiplier=0.1, seed=0),
    Flame(),
    RobustLR(theta=1),
]


@pytest.mark.parametrize("rule", OTHER_RULES, ids=lambda rule: rule.name)
def test_every_other_rule_refuses_partial_updates_naming_the_fix(rule):
    with pytest.raises(ConfigError, match="use aggregator 'fedavg'.* or partial_updates 'none'"):
        require_partial_updates(rule)
    reference = _reference(0)
    full = _update(np.random.default_rng(1), sorted(SHAPES))
    partial = {"a": full["a"]}
    with pytest.raises(ConfigError, match="cannot aggregate a partial update: update 5 holds 1"):
        rule.aggregate([full] * 5 + [partial], [1] * 6, reference)
    with pytest.raises(ConfigError, match="use aggregator 'fedavg' or partial_updates 'none'"):
        rule.merge([full, partial], [1, 1], reference)
    require_partial_updates(FedAvg())  # fedavg takes them


def test_merging_partials_of_fedavg_takes_partial_partials_too():
    reference = {"x": np.zeros(1, np.float32), "y": np.full(1, 7, np.float32)}
    merged, total = FedAvg().merge([{"x": np.ones(1, np.float32)}], [5], reference)
    assert merged["x"][0] == 1 and merged["y"][0] == 7 and total == 5


def test_fold_refuses_bad_tensor_weights_with_nothing_folded():
    reference = _reference(0)
    fold = FedAvg().fold(reference)
    update = _update(np.random.default_rng(1), ["a", "b"])
    for bad in ({"a": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0}):
        with pytest.raises(ConfigError, match="one weight per tensor"):
            fold.add(update, 2, tensor_weights=bad)
    for value in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="positive number"):
            fold.add(update, 2, tensor_weights={"a": 1.0, "b": value})
    with pytest.raises(ConfigError, match="no update was added"):
        fold.result()
    assert fold.tensor_weights() == dict.fromkeys(SHAPES, 0.0)


def test_a_fold_without_reference_refuses_a_tensor_nobody_sent():
    fold = WeightedMeanFold(specs_of(_reference(0)))
    fold.add({"a": np.zeros((3, 4), np.float32)}, 1)
    with pytest.raises(ConfigError, match="no update held tensor 'b'"):
        fold.result()


@pytest.mark.parametrize(
    ("got", "says"),
    [
        ([], "holds no tensor"),
        ([TensorSpec("a", "F32", (3, 4))] * 2, "more than once"),
        ([TensorSpec("zz", "F32", (1,))], "unexpected ['zz']"),
        ([TensorSpec("a", "F32", (4, 3))], "'a' is F32[4, 3]"),
        ([TensorSpec("b", "F64", (5,))], "'b' is F64[5]"),
    ],
)
def test_a_partial_layout_must_name_known_tensors_once_with_their_shapes(got, says):
    with pytest.raises(ModelFormatError) as refused:
        check_subset_layout(specs_of(_reference(0)), got)
    assert says in str(refused.value)
