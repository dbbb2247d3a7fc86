"""The ``+shared:F`` partition suffix (Zhao et al. 2018): every client holds the same shared
subset of the training data besides its own partition, which never includes it."""

from __future__ import annotations

import numpy as np
import pytest

from stratafl.apps.fashion_mnist import FashionMnistNumpyApp
from stratafl.client.app import ClientContext
from stratafl.data import load_fashion_mnist, parse_partitioner, partition, shared_subset
from stratafl.data.fashion_mnist import FILES, SYSTEM_DIR
from stratafl.data.partition import Dirichlet, Shards, WithShared
from stratafl.errors import ConfigError

HAS_DATA = all((SYSTEM_DIR / name).is_file() for name in FILES.values())


def test_the_suffix_parses_to_a_typed_partitioner_and_prints_back():
    parsed = parse_partitioner(" Shards:2 + SHARED:0.05 ")
    assert parsed == WithShared(Shards(2), 0.05)
    assert str(parsed) == "shards:2+shared:0.05"
    assert parse_partitioner("dirichlet:0.1+shared:0.5") == WithShared(Dirichlet(0.1), 0.5)


@pytest.mark.parametrize(
    "spec",
    [
        "iid+shared:0",
        "iid+shared:1",
        "iid+shared:-0.1",
        "iid+shared:nan",
        "iid+shared:",
        "iid+shared",
        "iid+copy:0.1",
        "iid+shared:0.1+shared:0.1",
        "shards:0+shared:0.1",
    ],
)
def test_a_bad_suffix_is_refused_with_the_valid_forms(spec):
    with pytest.raises(ConfigError, match=r"shared:<fraction in \(0, 1\)>"):
        parse_partitioner(spec)


def test_the_shared_subset_is_per_class_in_proportion_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    shared = shared_subset(labels, 0.1, seed=3)
    assert np.bincount(labels[shared]).tolist() == [10, 20, 30, 40]
    assert np.array_equal(shared, shared_subset(labels, 0.1, seed=3))
    assert not np.array_equal(shared, shared_subset(labels, 0.1, seed=4))
    with pytest.raises(ConfigError, match="rounds to no example"):
        shared_subset(labels, 0.001, seed=0)


def test_sharing_too_much_for_the_clients_is_refused():
    labels = np.repeat(np.arange(2), 5)
    with pytest.raises(ConfigError, match="use a smaller shared fraction"):
        partition(labels, "iid+shared:0.8", 3, seed=0)


@pytest.mark.skipif(not HAS_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
def test_each_fashion_mnist_client_holds_exactly_the_shared_subset_and_its_own_partition():
    dataset = load_fashion_mnist()
    labels, clients, spec = dataset.y_train, 10, "shards:2+shared:0.05"
    shared = shared_subset(labels, 0.05, seed=7)
    assert len(shared) == 3000 and np.bincount(labels[shared]).tolist() == [300] * 10
    rest = np.setdiff1d(np.arange(len(labels)), shared)
    own = [rest[p] for p in partition(labels[rest], "shards:2", clients, seed=7)]
    mine = []
    for k in range(clients):
        context = ClientContext(
            client_id=f"c{k}", partition_id=k, num_partitions=clients, partitioner=spec, seed=7
        )
        split = FashionMnistNumpyApp(context).split
        expected = np.union1d(own[k], shared)
        np.testing.assert_array_equal(split.x_train, dataset.x_train[expected])
        np.testing.assert_array_equal(split.y_train, labels[expected])
        assert len(np.unique(labels[own[k]])) <= 2  # still 2 label shards of its own
        mine.append(own[k])
    # the private parts are disjoint, never shared, and with the shared subset cover all
    everything = np.concatenate([*mine, shared])
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(labels)))
