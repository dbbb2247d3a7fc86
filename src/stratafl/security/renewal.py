"""When a tier renews what it holds: its own token, and a client its combiner's ticket.

Both are short-lived (a day, half an hour): a stolen copy dies soon, so clients and
combiners renew them themselves, halfway through their lives, leaving the other half to
ride out a controller that is briefly away. Times come from the tokens' own claims (read,
not verified: the holder only schedules by them).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from stratafl.errors import AuthError
from stratafl.security.files import write_private
from stratafl.security.tokens import read_claims_unverified

__all__ = ["MIN_RENEW_SECONDS", "keep_renewed_token", "renewal_due", "seconds_to_renewal"]

log = logging.getLogger(__name__)

MIN_RENEW_SECONDS = 1.0
"""Never ask again sooner than this (a token issued with a very short life)."""


def seconds_to_renewal(token: str, now: float | None = None) -> float:
    """Seconds until ``token`` is halfway through its life (at least `MIN_RENEW_SECONDS`)."""
    try:
        claims = read_claims_unverified(token)
    except AuthError:
        return MIN_RENEW_SECONDS
    halfway = (claims.issued_at + claims.expires_at) / 2
    return max(MIN_RENEW_SECONDS, halfway - (time.time() if now is None else now))


def renewal_due(token: str, now: float | None = None) -> bool:
    """True once ``token`` is past half its life: time to exchange it for a fresh copy."""
    try:
        claims = read_claims_unverified(token)
    except AuthError:
        return False
    halfway = (claims.issued_at + claims.expires_at) / 2
    return (time.time() if now is None else now) >= halfway


def keep_renewed_token(path: Path, token: str) -> bool:
    """Write a renewed ``token`` back to its file (mode 0600), so a restart finds it; True if
    written. A file that cannot be replaced (a read-only secret mounted by a container or a
    pod) is not an error: the tier goes on with the fresh token in memory and says, once per
    renewal, that a restart will read the old one, which lives until it expires."""
    try:
        write_private(path, f"{token}\n".encode())
    except OSError as exc:
        log.warning(
            "renewed the token but cannot write it to %s (%s): a restart reads the old one, "
            "valid until it expires; give the tier a writable copy of its token (e.g. in its "
            "work folder) to keep renewals across restarts",
            path,
            exc.strerror or exc,
        )
        return False
    return True
