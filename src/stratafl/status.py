"""Every status a federation records, as string enums.

They are strings so that the state store, the REST API and the logs stay readable, and
enums so that a typo is a type error instead of a silently unmatched comparison. On the
gRPC wire the client outcome travels as the proto enum ``OutcomeStatus``; the mapping
lives with the links that speak it.
"""

from __future__ import annotations

from enum import StrEnum


class OutcomeStatus(StrEnum):
    """What became of one client's task in a round."""

    PENDING = "pending"
    OK = "ok"
    REJECTED = "rejected"  # the update failed the checks (layout, NaN/Inf, bounds)
    FAILED = "failed"  # the client's own code failed and said so
    DROPPED = "dropped"  # the client's task stream broke before it answered
    TIMEOUT = "timeout"  # no answer before the round closed


class RoundStatus(StrEnum):
    FINISHED = "finished"
    FAILED = "failed"


class SessionStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"  # asked to stop: ended after the round in flight
    CANCELLED = "cancelled"  # asked to cancel: ended at once, the round in flight dropped


class CombinerStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class ClientStatus(StrEnum):
    ASSIGNED = "assigned"  # the controller named its combiner; no stream yet
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class TaskKind(StrEnum):
    """What a round asks of its clients."""

    TRAIN = "train"
    VALIDATE = "validate"
