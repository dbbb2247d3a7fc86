"""Streaming FedAvg equals the direct weighted mean, and hierarchical equals flat."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.aggregate import blocks
from stratafl.aggregate.mean import WeightedMeanFold, weighted_mean
from stratafl.errors import ConfigError, ModelFormatError
from stratafl.params import specs_of


def _updates(seed: int, count: int, shapes=((3, 4), (5,))):
    rng = np.random.default_rng(seed)
    return [
        {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
        for _ in range(count)
    ]


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    weights=st.lists(st.integers(1, 10_000), min_size=1, max_size=12),
)
def test_streaming_fold_equals_direct_weighted_mean(seed, weights):
    updates = _updates(seed, len(weights))
    fold = WeightedMeanFold(specs_of(updates[0]))
    for update, weight in zip(updates, weights, strict=True):
        fold.add(update, weight)
    mean, total = fold.result()
    assert total == sum(weights)
    direct = weighted_mean(updates, weights)
    for name in direct:
        assert mean[name].dtype == np.float32
        np.testing.assert_allclose(mean[name], direct[name], rtol=1e-6, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    groups=st.lists(st.lists(st.integers(1, 5000), min_size=1, max_size=5), min_size=1, max_size=5),
)
def test_hierarchical_fedavg_equals_flat_fedavg(seed, groups):
    """M combiners each fold their clients; the reducer folds the partials by weight."""
    weights = [w for group in groups for w in group]
    updates = _updates(seed, len(weights))
    reducer = WeightedMeanFold(specs_of(updates[0]))
    position = 0
    for group in groups:
        combiner = WeightedMeanFold(specs_of(updates[0]))
        for weight in group:
            combiner.add(updates[position], weight)
            position += 1
        partial, partial_weight = combiner.result()
        reducer.add(partial, partial_weight)
    hierarchical, total = reducer.result()
    flat = weighted_mean(updates, weights)
    assert total == sum(weights)
    for name in flat:
        np.testing.assert_allclose(hierarchical[name], flat[name], rtol=2e-6, atol=2e-6)


def test_fold_works_block_by_block_on_memmaps(tmp_path, monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 7)
    updates = _updates(1, 3, shapes=((50,), (4, 9)))
    mapped = []
    for i, update in enumerate(updates):
        maps = {}
        for name, array in update.items():
            m = np.memmap(tmp_path / f"{i}-{name}", dtype=array.dtype, mode="w+", shape=array.shape)
            m[:] = array
            maps[name] = m
        mapped.append(maps)
    fold = WeightedMeanFold(specs_of(updates[0]))
    for maps, weight in zip(mapped, [1, 2, 3], strict=True):
        fold.add(maps, weight)
    direct = weighted_mean(updates, [1, 2, 3])
    for name, array in fold.result()[0].items():
        np.testing.assert_allclose(array, direct[name], rtol=1e-6)


def test_fold_never_modifies_its_inputs():
    updates = _updates(2, 2)
    before = [{k: v.copy() for k, v in u.items()} for u in updates]
    fold = WeightedMeanFold(specs_of(updates[0]))
    for update in updates:
        fold.add(update, 3)
    fold.result()
    for update, copy in zip(updates, before, strict=True):
        for name in update:
            np.testing.assert_array_equal(update[name], copy[name])


def test_fold_refuses_bad_weights_other_layouts_and_emptiness():
    update = _updates(3, 1)[0]
    fold = WeightedMeanFold(specs_of(update))
    with pytest.raises(ConfigError, match="no update was added"):
        fold.result()
    for bad in (0, -1, float("nan")):
        with pytest.raises(ConfigError, match="positive number"):
            fold.add(update, bad)
    with pytest.raises(ModelFormatError, match="'t0'"):
        fold.add({"t0": np.zeros((4, 3), np.float32), "t1": update["t1"]}, 1)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int8"])
def test_the_mean_written_over_its_sums_equals_the_direct_mean_block_by_block(monkeypatch, dtype):
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 16)  # many blocks, each overlapping sums
    rng = np.random.default_rng(7)
    updates = [{"t": (rng.normal(size=(9, 11)) * 50).astype(dtype)} for _ in range(3)]
    fold = WeightedMeanFold(specs_of(updates[0]))
    for update, weight in zip(updates, [1, 4, 2], strict=True):
        fold.add(update, weight)
    mean, _ = fold.result()
    sums = sum(u["t"].astype(np.float64) * w for u, w in zip(updates, [1, 4, 2], strict=True))
    expected = np.empty((9, 11), dtype)
    expected[...] = sums / 7  # the same cast as the fold's, not the reference's rounding
    assert mean["t"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(mean["t"], expected)


def test_taking_the_mean_needs_no_memory_beyond_the_sums():
    import tracemalloc

    size = 8_000_000  # 32 MB of float32: a fresh result array would be 32 MB
    fold = WeightedMeanFold(specs_of({"w": np.zeros(size, np.float32)}))
    fold.add({"w": np.ones(size, np.float32)}, 2)
    tracemalloc.start()
    try:
        mean, weight = fold.result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert weight == 2 and float(mean["w"][-1]) == 1.0
    assert peak < size * 4 // 2  # the float64 scratch block (8 MB) only
    with pytest.raises(ConfigError, match="already taken"):
        fold.result()
