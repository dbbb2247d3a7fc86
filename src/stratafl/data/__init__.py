"""Datasets and the partitioners that split them among simulated clients."""

from stratafl.data.fashion_mnist import Dataset, load_fashion_mnist
from stratafl.data.federated import ClientSplit, client_split
from stratafl.data.partition import (
    dirichlet,
    iid,
    parse_partitioner,
    partition,
    shards,
    shared_subset,
)

__all__ = [
    "ClientSplit",
    "Dataset",
    "client_split",
    "dirichlet",
    "iid",
    "load_fashion_mnist",
    "parse_partitioner",
    "partition",
    "shards",
    "shared_subset",
]
