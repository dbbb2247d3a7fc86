"""What a client may claim, and who it is: bounds on the numbers a peer sends.

A hostile client can claim any example count (and so any weight in FedAvg) and any
metric; these checks bound both before anything is aggregated or recorded. A claim over
an explicit limit (the session's ``max_examples_per_client``, the token's
``max_examples``) is refused; a claim under it still weighs at most the round's weight
cap (clamped in the fold, `stratafl.aggregate.weights`). A score must lie in its kind's
range (`stratafl.aggregate.scores`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from stratafl.aggregate.scores import scores_problem
from stratafl.compression import check_codec
from stratafl.errors import UpdateRejected
from stratafl.proto import stratafl_pb2 as pb
from stratafl.settings import RoundSettings

MAX_METRICS = 64
MAX_METRIC_NAME_CHARS = 128
MAX_METRIC_MAGNITUDE = 1e12


@dataclass(frozen=True)
class Caller:
    """Who sent a message: its verified identity (on an insecure link: what it claims)."""

    client_id: str
    max_examples: int | None = None
    """The client's enrolment cap on ``num_examples``, if its token sets one."""


def metrics_problem(metrics: Mapping[str, float]) -> str:
    """Why a client's metrics are refused ("" if they are fine): bounded, finite numbers,
    each in the range of its kind (a rate in [0, 1], a loss >= 0)."""
    if len(metrics) > MAX_METRICS:
        return f"at most {MAX_METRICS} metrics per report, got {len(metrics)}"
    for name, value in metrics.items():
        if not name or len(name) > MAX_METRIC_NAME_CHARS:
            return f"metric names must have 1 to {MAX_METRIC_NAME_CHARS} characters"
        if not math.isfinite(value) or abs(value) > MAX_METRIC_MAGNITUDE:
            return (
                f"metric {name!r} is {value}; report finite numbers of magnitude at most "
                f"{MAX_METRIC_MAGNITUDE:g}"
            )
    return scores_problem(metrics)


def check_claim(header: pb.UpdateHeader, settings: RoundSettings, caller: Caller) -> None:
    """Raise `UpdateRejected` unless the update's example count and metrics are believable,
    and `ModelFormatError` if it is encoded with another codec than the session's."""
    check_codec(header.codec, settings.compression)
    if header.num_examples <= 0:
        raise UpdateRejected(f"num_examples must be positive, got {header.num_examples}")
    caps = [c for c in (settings.max_examples_per_client, caller.max_examples) if c]
    if caps and header.num_examples > min(caps):
        raise UpdateRejected(
            f"num_examples {header.num_examples} is over this client's limit of {min(caps)} "
            "(the session's max_examples_per_client or the client's enrolment)"
        )
    problem = metrics_problem(header.metrics)
    if problem:
        raise UpdateRejected(problem)
