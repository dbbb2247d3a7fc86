"""One client's share of a dataset, computed by the client itself from its context.

Clients never receive index lists: each process recomputes the same deterministic split
from (partitioner, number of partitions, seed) and keeps its own piece. Training data
follows the session's partitioner; validation data is an IID share of the test set, so
every client's accuracy estimates the same global test accuracy and their example-weighted
mean is exactly the accuracy on the whole test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stratafl.data.fashion_mnist import Dataset
from stratafl.data.partition import iid, partition
from stratafl.errors import ConfigError


class PartitionContext(Protocol):
    """The fields of `stratafl.client.app.ClientContext` a split needs (structural, so the
    data package does not import the runtime)."""

    @property
    def partition_id(self) -> int: ...

    @property
    def num_partitions(self) -> int: ...

    @property
    def partitioner(self) -> str: ...

    @property
    def seed(self) -> int: ...


@dataclass(frozen=True, eq=False)
class ClientSplit:
    """This client's training examples and its validation share of the test set."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def client_split(dataset: Dataset, context: PartitionContext) -> ClientSplit:
    """The train partition ``partition_id`` under ``partitioner`` and the matching IID test
    share; with ``num_partitions == 1`` the whole train and test sets (pooled baseline)."""
    k, pid = context.num_partitions, context.partition_id
    if not 0 <= pid < k:
        raise ConfigError(
            f"partition_id {pid} is outside 0..{k - 1}; give each of the {k} clients "
            "a distinct partition_id below num_partitions"
        )
    if k == 1:
        return ClientSplit(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)
    train_idx = partition(dataset.y_train, context.partitioner, k, context.seed)[pid]
    test_idx = iid(dataset.y_test, k, context.seed)[pid]
    share = dataset.select(train_idx, test_idx)  # only this client's images become floats
    return ClientSplit(share.x_train, share.y_train, share.x_test, share.y_test)
