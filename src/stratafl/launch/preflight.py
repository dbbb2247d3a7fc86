"""What `strata run` and `strata demo` check before they start a single process.

A typo in ``--aggregator``, ``--partition`` or ``--app`` otherwise surfaces minutes later as a
failed federation; here it is one `ConfigError` that names the flag and the fix, raised
before the launcher (and with it every tier's stack) is even imported.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import annotated_types
from pydantic import ValidationError as PydanticValidationError

from stratafl.aggregate import parse_aggregator
from stratafl.aggregate.registry import OPTIMIZERS, RULES
from stratafl.client.app import ClientContext, load_app
from stratafl.client.scaffold import DriftCorrectableApp
from stratafl.data import parse_partitioner
from stratafl.errors import ConfigError
from stratafl.settings import SessionConfig

__all__ = ["check_aggregator", "check_federation", "min_clients_for", "session_from_flags"]

AGGREGATORS_DOC = "docs/aggregators.md"


def check_aggregator(spec: str) -> None:
    """Parse ``--aggregator``; an unknown name gets the closest known one as a suggestion."""
    names = sorted({*RULES, *OPTIMIZERS})
    for part in spec.split("+"):
        name = part.partition(":")[0].strip().lower()
        if name and name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else f"known: {', '.join(names)} "
            raise ConfigError(f"unknown aggregator {name!r}; {hint}(see {AGGREGATORS_DOC})")
    try:
        parse_aggregator(spec)
    except ConfigError as exc:
        raise ConfigError(f"--aggregator {spec!r}: {exc} (see {AGGREGATORS_DOC})") from exc


def min_clients_for(aggregator: str) -> int:
    """The fewest updates the aggregator's rule can run with: `strata run`'s --min-clients
    when the user gives none."""
    return parse_aggregator(aggregator).rule.min_updates


def session_from_flags(values: Mapping[str, Any], flags: Mapping[str, str]) -> SessionConfig:
    """A `SessionConfig` from ``values``; a value out of range is a ConfigError that names
    its flag (``flags`` maps a field to its flag, default ``--field-name``) and the range."""
    try:
        return SessionConfig.model_validate(dict(values))
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across fields: its message names them
            raise ConfigError(first["msg"].removeprefix("Value error, ")) from exc
        field = str(first["loc"][0])
        flag = flags.get(field, "--" + field.replace("_", "-"))
        raise ConfigError(
            f"{flag} {values.get(field)!r} is out of range: "
            f"{_allowed(field) or first['msg'].removeprefix('Value error, ')}"
        ) from exc


def _allowed(field: str) -> str:
    """``"use a value >= 1 and <= 100000"`` from the field's bounds; "" when it has none."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    bounds = [
        f"{symbol} {getattr(bound, name)}"
        for bound in SessionConfig.model_fields[field].metadata
        for name, symbol in symbols.items()
        if isinstance(bound, annotated_types.BaseMetadata) and hasattr(bound, name)
    ]
    return f"use a value {' and '.join(bounds)}" if bounds else ""


def check_federation(
    *, app: str, clients: int, combiners: int, partition: str, seed: int, session: SessionConfig
) -> None:
    """The partition parses, the app loads (its optional extras are installed) and can run
    the session's drift correction, and each combiner gets enough clients for the rule."""
    try:
        parse_partitioner(partition)
    except ConfigError as exc:
        raise ConfigError(f"--partition: {exc}") from exc
    loaded = load_app(app, ClientContext(num_partitions=max(1, clients), seed=seed))
    if session.drift_correction != "none" and not isinstance(loaded, DriftCorrectableApp):
        raise ConfigError(
            f"--drift-correction {session.drift_correction} needs an app with "
            "train_corrected(params, config, "
            f"correction), which {app} lacks; add it (see stratafl.apps.fashion_mnist) or "
            "leave the flag out"
        )
    need = parse_aggregator(session.aggregator).rule.min_updates
    if combiners >= 1 and clients // combiners < need:
        raise ConfigError(
            f"--aggregator {session.aggregator!r} needs {need} clients at each combiner, but "
            f"{clients} clients over {combiners} combiners leave {clients // combiners}: "
            f"raise --clients to {need * combiners} or lower --combiners"
        )
    if clients < session.min_clients:
        raise ConfigError(
            f"--min-clients {session.min_clients} is more than the {clients} clients "
            "started: lower it or raise --clients"
        )
