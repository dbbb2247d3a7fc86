"""Attack specs: ``NAME[:key=value,...]``, the one way to name an attack on a command line.

    label_flip                          every label l -> 9 - l
    label_flip:source=6,target=0        only class 6 -> class 0
    backdoor:target=0,fraction=0.5      a 4x4 trigger on half the examples, relabelled 0
    scale:factor=10                     boost the update tenfold (model replacement)
    sign_flip                           send the negated update
    noise:std=10                        send Gaussian noise instead of the update
    backdoor:target=0+scale:factor=10   both: a backdoor whose update is boosted (model
                                        replacement, Bagdasaryan et al. 2020)

A ``+`` joins a data attack and a model attack run by the same client, data first.
Values are typed by the attack's fields (``target=0`` an int, ``fraction=0.5`` a float,
``source=none`` unsets an optional int); each attack checks its own bounds.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stratafl.attacks.data import Backdoor, DataAttack, LabelFlip
from stratafl.attacks.model import GaussianNoise, ScaleUpdate, SignFlip, UpdateAttack
from stratafl.errors import ConfigError


@dataclass(frozen=True)
class Combined:
    """A data attack and a model attack run by one client: the poisoned data trains the
    model, then the update is rewritten. Bagdasaryan et al. 2020 ("How To Backdoor
    Federated Learning", AISTATS) boost a backdoored update by N/eta so that it replaces
    the global model: ``backdoor:...+scale:factor=N``."""

    data: DataAttack
    update: UpdateAttack


Attack = DataAttack | UpdateAttack | Combined

ATTACKS: Mapping[str, type[DataAttack | UpdateAttack]] = {
    cls.name: cls for cls in (LabelFlip, Backdoor, ScaleUpdate, SignFlip, GaussianNoise)
}
"""Attack name -> its class; the fields are the spec's keys."""

MAX_SPEC_LENGTH = 256


def parse_attack(spec: str) -> Attack:
    """Parse ``NAME[:key=value,...][+NAME[:key=value,...]]`` (see the module docstring);
    ConfigError names the fix."""
    if len(spec) > MAX_SPEC_LENGTH:
        raise ConfigError(f"attack spec is {len(spec)} characters; keep it under {MAX_SPEC_LENGTH}")
    parts = spec.split("+")
    if len(parts) == 1:
        return _parse_one(spec)
    if len(parts) == 2:
        data, update = (_parse_one(part) for part in parts)
        if isinstance(data, DataAttack) and isinstance(update, UpdateAttack):
            return Combined(data, update)
    raise ConfigError(
        f"attack spec {spec!r}: join at most one data attack and one model attack, data first, "
        "e.g. 'backdoor:target=0+scale:factor=10'"
    )


def _parse_one(spec: str) -> DataAttack | UpdateAttack:
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; valid attacks are {sorted(ATTACKS)}")
    cls = ATTACKS[name]
    fields = _fields(cls)
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"attack parameter {item!r} in {spec!r} is not key=value")
        if key not in fields:
            raise ConfigError(
                f"{name} has no parameter {key!r}; its parameters are {sorted(fields)}"
            )
        if key in kwargs:
            raise ConfigError(f"attack parameter {key!r} is given twice in {spec!r}")
        kwargs[key] = _convert(name, key, value, fields[key])
    return cls(**kwargs)


def attack_spec(attack: Attack) -> str:
    """The canonical spec of ``attack``: `parse_attack` of it gives the attack back."""
    if isinstance(attack, Combined):
        return f"{attack_spec(attack.data)}+{attack_spec(attack.update)}"
    values = [f"{key}={_format(getattr(attack, key))}" for key in _fields(type(attack))]
    return attack.name + (":" + ",".join(values) if values else "")


def parse_attack_plan(attacks: Mapping[int, str], clients: int) -> dict[int, Attack]:
    """Check which clients (partition ids) run which attack, before anything starts."""
    plan: dict[int, Attack] = {}
    for partition_id, spec in attacks.items():
        if not 0 <= partition_id < clients:
            raise ConfigError(
                f"attack on client {partition_id}, but the federation has clients 0..{clients - 1}"
            )
        plan[partition_id] = parse_attack(spec)
    return plan


def _fields(cls: type[DataAttack | UpdateAttack]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _convert(name: str, key: str, value: str, kind: Any) -> int | float | None:
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value.lower() == "none":
            return None
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    try:
        number: int | float = int(value) if kind is int else float(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}: {key}={value!r} is not {what}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: {key}={value!r} must be a finite number")
    return number


def _format(value: object) -> str:
    return "none" if value is None else repr(value)
