"""Aggregation maths: pure functions and streaming folds over numpy arrays.

Nothing here does I/O or knows about messages. Arrays may be numpy memmaps: rules that
need every update work in coordinate blocks so that a memmap is never read whole.

    aggregate.rule        the AggregationRule contract (aggregate / merge / fold)
    aggregate.fedavg      FedAvg                       (mean.py: the weighted-mean fold)
    aggregate.coordinate  Median, TrimmedMean
    aggregate.krum        Krum, MultiKrum, Bulyan
    aggregate.clipping    NormBounding
    aggregate.privacy     DPGaussian
    aggregate.flame       Flame                        (backdoor defence: cluster, clip, noise)
    aggregate.rlr         RobustLR                     (backdoor defence: sign-vote learning rate)
    aggregate.server_opt  ServerAverage, FedAvgM (and the helpers every optimiser shares)
    aggregate.adaptive    FedAdam, FedYogi, FedAdagrad
    aggregate.checks      check_update: the checks before any rule
    aggregate.fedprox     proximal_term, proximal_gradient for client apps
    aggregate.scaffold    SCAFFOLD's control variates: client maths, model_part
    aggregate.registry    parse_aggregator("NAME[:k=v,...][+OPTIMISER[:k=v,...]]")
"""

from stratafl.aggregate.adaptive import FedAdagrad, FedAdam, FedYogi
from stratafl.aggregate.checks import check_finite, check_update
from stratafl.aggregate.clipping import NormBounding
from stratafl.aggregate.coordinate import Median, TrimmedMean
from stratafl.aggregate.fedavg import FedAvg
from stratafl.aggregate.fedprox import proximal_gradient, proximal_term
from stratafl.aggregate.flame import Flame
from stratafl.aggregate.krum import Bulyan, Krum, MultiKrum
from stratafl.aggregate.mean import WeightedMeanFold, weighted_mean
from stratafl.aggregate.privacy import DPGaussian
from stratafl.aggregate.registry import OPTIMIZERS, RULES, Aggregator, parse_aggregator
from stratafl.aggregate.rlr import RobustLR
from stratafl.aggregate.rule import AggregationRule, Fold, LeftOut, SelectsInputs
from stratafl.aggregate.server_opt import (
    FedAvgM,
    ServerAverage,
    ServerOptimizer,
    ServerOptState,
)

__all__ = [
    "OPTIMIZERS",
    "RULES",
    "AggregationRule",
    "Aggregator",
    "Bulyan",
    "DPGaussian",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "Flame",
    "Fold",
    "LeftOut",
    "Krum",
    "Median",
    "MultiKrum",
    "NormBounding",
    "RobustLR",
    "SelectsInputs",
    "ServerAverage",
    "ServerOptState",
    "ServerOptimizer",
    "TrimmedMean",
    "WeightedMeanFold",
    "check_finite",
    "check_update",
    "parse_aggregator",
    "proximal_gradient",
    "proximal_term",
    "weighted_mean",
]
