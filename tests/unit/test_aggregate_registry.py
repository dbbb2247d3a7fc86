"""Aggregator specs: parsing, typing, errors that list what is valid."""

from __future__ import annotations

import pytest

from stratafl.aggregate import (
    OPTIMIZERS,
    RULES,
    Aggregator,
    Bulyan,
    DPGaussian,
    FedAdam,
    FedAvg,
    FedAvgM,
    Flame,
    Krum,
    Median,
    MultiKrum,
    RobustLR,
    ServerAverage,
    TrimmedMean,
    parse_aggregator,
)
from stratafl.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fedavg", Aggregator(FedAvg(), ServerAverage())),
        ("median", Aggregator(Median(), ServerAverage())),
        ("trimmed_mean:beta=0.1", Aggregator(TrimmedMean(beta=0.1), ServerAverage())),
        ("krum:f=1", Aggregator(Krum(f=1), ServerAverage())),
        ("multikrum:f=2,m=none", Aggregator(MultiKrum(f=2, m=None), ServerAverage())),
        ("bulyan", Aggregator(Bulyan(), ServerAverage())),
        ("fedadam:server_lr=0.01", Aggregator(FedAvg(), FedAdam(server_lr=0.01))),
        (" Krum : f = 2 + fedavgm:momentum=0.5 ", Aggregator(Krum(f=2), FedAvgM(momentum=0.5))),
        ("median+fedavg", Aggregator(Median(), ServerAverage())),
        (
            "dp_gaussian:clip_norm=2,noise_multiplier=1.1,seed=4",
            Aggregator(DPGaussian(clip_norm=2.0, noise_multiplier=1.1, seed=4), ServerAverage()),
        ),
        ("flame", Aggregator(Flame(), ServerAverage())),
        (
            "flame:noise_lambda=0.01,weight_by_examples=TRUE,cluster_models=false,seed=3",
            Aggregator(Flame(noise_lambda=0.01, weight_by_examples=True, seed=3), ServerAverage()),
        ),
        (
            "rlr:theta=6,server_lr=0.5",
            Aggregator(RobustLR(theta=6, server_lr=0.5), ServerAverage()),
        ),
    ],
)
def test_specs_parse_to_typed_components(spec: str, expected: Aggregator) -> None:
    parsed = parse_aggregator(spec)
    assert parsed == expected
    assert parse_aggregator(parsed.spec) == parsed


def test_values_take_the_parameter_type() -> None:
    rule = parse_aggregator("multikrum:f=1,m=3").rule
    assert isinstance(rule, MultiKrum)
    assert type(rule.f) is int and type(rule.m) is int
    assert type(parse_aggregator("trimmed_mean:beta=0").rule.beta) is float  # type: ignore[attr-defined]
    flame = parse_aggregator("flame:weight_by_examples=true").rule
    assert isinstance(flame, Flame) and flame.weight_by_examples is True
    assert parse_aggregator("flame:weight_by_examples=true").spec.count("=true") == 1


def test_every_registered_name_parses_alone() -> None:
    for name in [*RULES, *OPTIMIZERS]:
        parse_aggregator(name)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", r"unknown aggregator 'nope'; valid rules are \['bulyan', .*server optimisers"),
        ("median+krum", r"unknown server optimiser 'krum'; valid names are \['fedadagrad'"),
        ("fedadam+fedyogi", r"unknown aggregation rule 'fedadam'"),
        ("krum:g=1", r"krum has no parameter 'g'; its parameters are \['f'\]"),
        ("median:f=1", r"median has no parameter 'f'; its parameters are none"),
        ("krum:f=1.5", r"krum: f='1.5' is not an integer"),
        ("trimmed_mean:beta=x", r"beta='x' is not a number"),
        ("trimmed_mean:beta=nan", r"must be a finite number"),
        ("krum:f", r"'f' in 'krum:f' is not key=value"),
        ("krum:f=1,f=2", r"'f' is given twice"),
        ("a+b+c", r"malformed"),
        ("median+", r"malformed"),
        ("trimmed_mean:beta=0.7", r"beta=0.7 must be in \[0, 0.5\)"),
        ("dp_gaussian:noise_key=1", r"no parameter 'noise_key'"),
        ("flame:noise_key=1", r"no parameter 'noise_key'"),
        ("flame:cluster_models=1", r"flame: cluster_models='1' is not true or false"),
        ("rlr:theta=0", r"rlr: theta=0 must be >= 1"),
    ],
)
def test_bad_specs_say_what_is_valid(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_aggregator(spec)
