"""The one exception root of stratafl.

    StrataError
     +-- ConfigError            a setting is missing or out of range
     +-- ModelFormatError       bytes on the wire or on disk are not a valid model
     +-- UpdateRejected         an update failed the checks before aggregation
     +-- NotFoundError          a model, session or round id that does not exist
     +-- UnavailableError       a peer (controller, combiner) cannot be reached
     +-- RoundFailed            a round closed with fewer than min_clients updates
     +-- AuthError              credentials missing, malformed, expired or revoked
     +-- PermissionDenied       valid credentials whose role may not do this

Every message names the value that is wrong and what to do about it. Third-party errors
are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class StrataError(Exception):
    """Root of every error stratafl raises on purpose."""


class ConfigError(StrataError, ValueError):
    """A setting is missing, malformed or out of range."""


class ModelFormatError(StrataError, ValueError):
    """Bytes that should hold model parameters do not."""


class UpdateRejected(StrataError):
    """A client update failed the checks that run before any aggregation rule."""


class NotFoundError(StrataError, KeyError):
    """A model, session or round id that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class UnavailableError(StrataError):
    """A peer cannot be reached."""


class RoundFailed(StrataError):
    """A round closed without enough updates."""


class AuthError(StrataError):
    """Credentials are missing, malformed, expired or revoked: who is calling is unknown."""


class PermissionDenied(StrataError):
    """The caller is known, but its role (or identity) may not do this."""


class Conflict(StrataError):
    """The federation's state forbids this change (e.g. revoking the last admin token)."""


class RateLimited(StrataError):
    """A caller sent more requests than its share; ``retry_after`` says when to try again."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
