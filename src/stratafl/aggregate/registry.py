"""Aggregator specs: ``--aggregator RULE[:key=value,...][+OPTIMISER[:key=value,...]]``.

A spec picks an aggregation rule (run at the combiners and the reducer) and a server
optimiser (run at the reducer on the merged model). Either part may be left out:

    median                              median rule, no server optimiser
    trimmed_mean:beta=0.1               trimmed mean, no server optimiser
    fedadam:server_lr=0.01              FedAvg rule + FedAdam (the name of an optimiser
                                        alone means the FedAvg rule under it)
    krum:f=2+fedavgm:momentum=0.9       Krum rule + server momentum

Values are typed by the factory's keyword-only parameters (``f=1`` is an int, ``beta=0.1``
a float, ``m=none`` unsets an optional int, ``weight_by_examples=true`` sets a flag).
``fedavg`` names the rule and, after ``+``, the identity optimiser: either way it means
plain averaging.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stratafl.aggregate.adaptive import FedAdagrad, FedAdam, FedYogi
from stratafl.aggregate.clipping import NormBounding
from stratafl.aggregate.coordinate import Median, TrimmedMean
from stratafl.aggregate.fedavg import FedAvg
from stratafl.aggregate.flame import Flame
from stratafl.aggregate.krum import Bulyan, Krum, MultiKrum
from stratafl.aggregate.privacy import DPGaussian
from stratafl.aggregate.rlr import RobustLR
from stratafl.aggregate.rule import AggregationRule
from stratafl.aggregate.server_opt import (
    FedAvgM,
    ServerAverage,
    ServerOptimizer,
)
from stratafl.errors import ConfigError

RULES: Mapping[str, Callable[..., AggregationRule]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        Median,
        TrimmedMean,
        Krum,
        MultiKrum,
        Bulyan,
        NormBounding,
        DPGaussian,
        Flame,
        RobustLR,
    )
}
"""Rule name -> factory taking the rule's keyword parameters."""

OPTIMIZERS: Mapping[str, Callable[..., ServerOptimizer]] = {
    cls.name: cls for cls in (ServerAverage, FedAvgM, FedAdam, FedYogi, FedAdagrad)
}
"""Server optimiser name -> factory taking its keyword parameters."""

_RUNTIME_FIELDS = {"noise_key"}  # set by the runtime per round, never in a spec


@dataclass(frozen=True)
class Aggregator:
    """What a session aggregates with: a rule and a server optimiser."""

    rule: AggregationRule = field(default_factory=FedAvg)
    optimizer: ServerOptimizer = field(default_factory=ServerAverage)

    @property
    def spec(self) -> str:
        """The canonical spec string; `parse_aggregator` of it gives this aggregator back."""
        rule = _format_part(self.rule)
        if isinstance(self.optimizer, ServerAverage):
            return rule
        return f"{rule}+{self.optimizer_spec}"

    @property
    def optimizer_spec(self) -> str:
        """The server optimiser's part of the spec (``"fedavg"`` for plain averaging): what
        its saved state is labelled with, so a different optimiser never resumes it."""
        return _format_part(self.optimizer)

    @property
    def has_optimizer_state(self) -> bool:
        return self.optimizer.stateful


def parse_aggregator(spec: str) -> Aggregator:
    """Parse ``RULE[:k=v,...][+OPTIMISER[:k=v,...]]`` (see the module docstring)."""
    parts = spec.strip().split("+")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise ConfigError(
            f"aggregator spec {spec!r} is malformed; use RULE[:key=value,...]"
            "[+OPTIMISER[:key=value,...]], e.g. 'trimmed_mean:beta=0.1+fedadam:server_lr=0.01'"
        )
    first_name, first_params = _split_part(parts[0])
    if first_name not in RULES and first_name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown aggregator {first_name!r}; valid rules are {sorted(RULES)} and valid "
            f"server optimisers are {sorted(OPTIMIZERS)}"
        )
    if len(parts) == 1 and first_name not in RULES and first_name in OPTIMIZERS:
        return Aggregator(
            FedAvg(), _build(OPTIMIZERS, "server optimiser", first_name, first_params)
        )
    rule = _build(RULES, "aggregation rule", first_name, first_params)
    if len(parts) == 1:
        return Aggregator(rule, ServerAverage())
    opt_name, opt_params = _split_part(parts[1])
    return Aggregator(rule, _build(OPTIMIZERS, "server optimiser", opt_name, opt_params))


def _split_part(part: str) -> tuple[str, dict[str, str]]:
    name, _, rest = part.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"aggregator parameter {item!r} in {part!r} is not key=value, e.g. 'f=1'"
            )
        if key.strip() in params:
            raise ConfigError(f"aggregator parameter {key.strip()!r} is given twice in {part!r}")
        params[key.strip()] = value.strip()
    return name.strip().lower(), params


def _parameters(factory: Callable[..., Any]) -> dict[str, Any]:
    """Spec-settable parameter name -> type of a dataclass factory."""
    hints = typing.get_type_hints(factory)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(factory)  # type: ignore[arg-type]
        if f.init and f.name not in _RUNTIME_FIELDS
    }


def _build(
    table: Mapping[str, Callable[..., Any]], kind: str, name: str, raw: dict[str, str]
) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; valid names are {sorted(table)}")
    factory = table[name]
    parameters = _parameters(factory)
    kwargs = {}
    for key, value in raw.items():
        if key not in parameters:
            valid = sorted(parameters) or "none"
            raise ConfigError(f"{name} has no parameter {key!r}; its parameters are {valid}")
        kwargs[key] = _convert(name, key, value, parameters[key])
    return factory(**kwargs)


def _convert(name: str, key: str, value: str, kind: Any) -> bool | int | float | None:
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value.lower() == "none":
            return None
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ConfigError(f"{name}: {key}={value!r} is not true or false")
        return value.lower() == "true"
    try:
        if kind is int:
            return int(value)
        number = float(value)
    except ValueError:
        raise ConfigError(
            f"{name}: {key}={value!r} is not {'an integer' if kind is int else 'a number'}"
            + ("; or 'none'" if optional else "")
        ) from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: {key}={value!r} must be a finite number")
    return number


def _format_part(component: Any) -> str:
    values = [
        f"{key}={_format_value(getattr(component, key))}" for key in _parameters(type(component))
    ]
    return component.name + (":" + ",".join(values) if values else "")


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else repr(value)
