"""Domain errors as gRPC status codes: one table, checked by a test to cover every error."""

from __future__ import annotations

import grpc

from stratafl.errors import (
    AuthError,
    ConfigError,
    Conflict,
    ModelFormatError,
    NotFoundError,
    PermissionDenied,
    RateLimited,
    RoundFailed,
    StrataError,
    UnavailableError,
    UpdateRejected,
)

GRPC_STATUS: dict[type[StrataError], grpc.StatusCode] = {
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelFormatError: grpc.StatusCode.INVALID_ARGUMENT,
    UpdateRejected: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    RoundFailed: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    AuthError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    StrataError: grpc.StatusCode.UNKNOWN,
}


def status_of(error: StrataError) -> grpc.StatusCode:
    """The status of the most specific class of ``error`` in `GRPC_STATUS`."""
    for cls in type(error).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]  # type: ignore[index]
    return grpc.StatusCode.UNKNOWN
