"""Aggregation maths: pure functions and streaming folds over numpy arrays.

Nothing here does I/O or knows about messages. Arrays may be numpy memmaps: rules that
need every update work in coordinate blocks so that a memmap is never read whole.
"""

from stratafl.aggregate.fedavg import WeightedMeanFold, weighted_mean

__all__ = ["WeightedMeanFold", "weighted_mean"]
