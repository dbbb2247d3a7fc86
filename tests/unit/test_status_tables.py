"""Every domain error has a gRPC status, and every outcome status survives the wire."""

from __future__ import annotations

import grpc
import pytest

import stratafl.errors as errors
from stratafl.proto import stratafl_pb2 as pb
from stratafl.status import OutcomeStatus
from stratafl.transport.error_codes import GRPC_STATUS, status_of
from stratafl.transport.outcomes import outcome_from_proto, outcome_to_proto


def _domain_errors() -> list[type[errors.StrataError]]:
    return [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.StrataError)
    ]


def test_every_domain_error_has_a_grpc_status() -> None:
    assert set(_domain_errors()) == set(GRPC_STATUS)


@pytest.mark.parametrize("error", _domain_errors())
def test_status_of_picks_the_errors_own_row(error: type[errors.StrataError]) -> None:
    assert status_of(error("x")) == GRPC_STATUS[error]
    assert status_of(errors.NotFoundError("x")) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("status", list(OutcomeStatus))
def test_every_outcome_status_survives_the_wire(status: OutcomeStatus) -> None:
    message = pb.ClientOutcome(status=outcome_to_proto(status))
    assert (
        outcome_from_proto(pb.ClientOutcome.FromString(message.SerializeToString()).status)
        == status
    )


def test_an_unset_or_unknown_outcome_never_counts_as_ok() -> None:
    assert outcome_from_proto(pb.OUTCOME_STATUS_UNSPECIFIED) == OutcomeStatus.FAILED
    assert outcome_from_proto(99) == OutcomeStatus.FAILED  # type: ignore[arg-type]
