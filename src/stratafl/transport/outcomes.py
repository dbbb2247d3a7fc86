"""Client outcome statuses on the wire: the proto enum and the `OutcomeStatus` StrEnum."""

from __future__ import annotations

from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import OutcomeStatus

_TO_PROTO: dict[OutcomeStatus, pb.OutcomeStatus] = {
    OutcomeStatus.PENDING: pb.OUTCOME_PENDING,
    OutcomeStatus.OK: pb.OUTCOME_OK,
    OutcomeStatus.REJECTED: pb.OUTCOME_REJECTED,
    OutcomeStatus.FAILED: pb.OUTCOME_FAILED,
    OutcomeStatus.DROPPED: pb.OUTCOME_DROPPED,
    OutcomeStatus.TIMEOUT: pb.OUTCOME_TIMEOUT,
}
_FROM_PROTO = {wire: status for status, wire in _TO_PROTO.items()}


def outcome_to_proto(status: OutcomeStatus) -> pb.OutcomeStatus:
    return _TO_PROTO[status]


def outcome_from_proto(wire: pb.OutcomeStatus) -> OutcomeStatus:
    """The status a peer sent; an unknown or unset value counts as a failure, never as ok."""
    return _FROM_PROTO.get(wire, OutcomeStatus.FAILED)
