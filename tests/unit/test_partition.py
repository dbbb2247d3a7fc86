"""Properties every partitioner must have, and the skew each one promises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratafl.data.partition import (
    DIRICHLET_MIN_SIZE,
    IID,
    Dirichlet,
    Shards,
    dirichlet,
    iid,
    parse_partitioner,
    partition,
    shards,
)
from stratafl.errors import ConfigError

SPECS = ["iid", "dirichlet:0.5", "dirichlet:0.05", "dirichlet:100", "shards:1", "shards:3"]


@st.composite
def labels_and_k(draw: st.DrawFn, min_size: int = 1) -> tuple[np.ndarray, int]:
    n = draw(st.integers(min_size, 400))
    classes = draw(st.integers(1, 10))
    labels = np.asarray(draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    k = draw(st.integers(1, min(20, n)))
    return labels.astype(np.int64), k


def _fits(spec: str, n: int, k: int) -> bool:
    return not spec.startswith("shards") or k * int(spec.split(":")[1]) <= n


@settings(max_examples=60, deadline=None)
@given(data=labels_and_k(), spec=st.sampled_from(SPECS), seed=st.integers(0, 2**32 - 1))
def test_partitions_are_disjoint_cover_everything_and_repeat_per_seed(
    data: tuple[np.ndarray, int], spec: str, seed: int
) -> None:
    labels, k = data
    if not _fits(spec, len(labels), k):
        with pytest.raises(ConfigError, match="shards"):
            partition(labels, spec, k, seed)
        return
    parts = partition(labels, spec, k, seed)
    assert len(parts) == k
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    again = partition(labels, spec, k, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(data=labels_and_k(), alpha=st.floats(0.01, 100), seed=st.integers(0, 2**32 - 1))
def test_dirichlet_never_leaves_a_partition_below_the_minimum(
    data: tuple[np.ndarray, int], alpha: float, seed: int
) -> None:
    labels, k = data
    parts = dirichlet(labels, k, alpha, seed)
    floor = max(1, min(DIRICHLET_MIN_SIZE, len(labels) // k))
    assert min(len(p) for p in parts) >= floor


@pytest.mark.parametrize("spec", SPECS)
def test_different_seeds_give_different_splits(spec: str) -> None:
    labels = np.repeat(np.arange(10), 100)
    a = partition(labels, spec, 10, seed=0)
    b = partition(labels, spec, 10, seed=1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_partition_is_the_whole_dataset() -> None:
    labels = np.repeat(np.arange(10), 30)
    for spec in SPECS:
        (only,) = partition(labels, spec, 1, seed=3)
        np.testing.assert_array_equal(only, np.arange(len(labels)))


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(p) for p in iid(np.zeros(1003, dtype=np.int64), 10, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def _mean_label_entropy(parts: list[np.ndarray], labels: np.ndarray) -> float:
    entropies = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=10) / len(p)
        freq = freq[freq > 0]
        entropies.append(float(-(freq * np.log(freq)).sum()))
    return float(np.mean(entropies))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_alpha_skews_labels_more_than_large_alpha(seed: int) -> None:
    labels = np.repeat(np.arange(10), 600)
    skewed = _mean_label_entropy(dirichlet(labels, 10, 0.1, seed), labels)
    mild = _mean_label_entropy(dirichlet(labels, 10, 1.0, seed), labels)
    uniform = _mean_label_entropy(dirichlet(labels, 10, 1000.0, seed), labels)
    assert skewed < mild < uniform
    assert uniform > 0.99 * np.log(10)


@settings(max_examples=40, deadline=None)
@given(
    classes=st.integers(1, 10),
    k=st.integers(1, 10),
    per_client=st.integers(1, 4),
    shard_size=st.integers(1, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_shards_give_each_client_at_most_s_labels_when_classes_fill_whole_shards(
    classes: int, k: int, per_client: int, shard_size: int, seed: int
) -> None:
    num_shards = k * per_client
    if num_shards % classes:
        return
    labels = np.repeat(np.arange(classes), num_shards // classes * shard_size)
    parts = shards(labels, k, per_client, seed)
    assert all(len(np.unique(labels[p])) <= per_client for p in parts)
    assert {len(p) for p in parts} == {per_client * shard_size}


@settings(max_examples=40, deadline=None)
@given(data=labels_and_k(), per_client=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_shards_give_at_most_2s_labels_when_classes_are_at_least_a_shard(
    data: tuple[np.ndarray, int], per_client: int, seed: int
) -> None:
    labels, k = data
    num_shards = k * per_client
    if num_shards > len(labels) or np.bincount(labels).max(initial=0) == 0:
        return
    shard_size = -(-len(labels) // num_shards)
    if np.bincount(labels)[np.unique(labels)].min() < shard_size:
        return  # a shard may then span several small classes; no bound holds
    for p in shards(labels, k, per_client, seed):
        assert len(np.unique(labels[p])) <= 2 * per_client


def test_fashion_mnist_sized_two_shards_per_client_gives_at_most_two_labels() -> None:
    labels = np.repeat(np.arange(10), 6000)
    parts = shards(labels, 10, 2, seed=0)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert [len(p) for p in parts] == [6000] * 10


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("iid", IID()),
        (" IID ", IID()),
        ("dirichlet:0.5", Dirichlet(0.5)),
        ("Dirichlet: 1e-1", Dirichlet(0.1)),
        ("shards:2", Shards(2)),
    ],
)
def test_parse_accepts_the_documented_forms(spec: str, parsed: object) -> None:
    assert parse_partitioner(spec) == parsed
    assert parse_partitioner(str(parsed)) == parsed  # str() is the canonical spec


@pytest.mark.parametrize(
    "spec",
    ["", "iid:1", "dirichlet", "dirichlet:", "dirichlet:0", "dirichlet:-1", "dirichlet:nan",
     "dirichlet:inf", "dirichlet:abc", "shards", "shards:0", "shards:1.5", "natural", "shard:2"],
)  # fmt: skip
def test_parse_rejects_bad_specs_naming_the_valid_forms(spec: str) -> None:
    with pytest.raises(ConfigError, match="'iid', 'dirichlet:<alpha > 0>'.*'shards:<int >= 1>'"):
        parse_partitioner(spec)


@given(st.text(max_size=20))
def test_parse_either_succeeds_or_raises_config_error(spec: str) -> None:
    try:
        parse_partitioner(spec)
    except ConfigError:
        pass


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iid(np.zeros(5, dtype=np.int64), 6, 0), "between 1 and the number of examples"),
        (lambda: iid(np.zeros(5, dtype=np.int64), 0, 0), "between 1"),
        (lambda: iid(np.zeros(5), 2, 0), "1-D integer array"),
        (lambda: iid(np.zeros((5, 2), dtype=np.int64), 2, 0), "1-D integer array"),
        (lambda: dirichlet(np.zeros(5, dtype=np.int64), 2, 0.0, 0), "alpha"),
        (lambda: shards(np.zeros(5, dtype=np.int64), 3, 2, 0), "6 shards but only 5"),
    ],
)
def test_bad_arguments_are_config_errors_that_say_why(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]
