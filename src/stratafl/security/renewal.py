"""When a tier renews what it holds: its own token, and a client its combiner's ticket.

Both are short-lived (a day, half an hour): a stolen copy dies soon, so clients and
combiners renew them themselves, halfway through their lives, leaving the other half to
ride out a controller that is briefly away. Times come from the tokens' own claims (read,
not verified: the holder only schedules by them).
"""

from __future__ import annotations

import time

from stratafl.errors import AuthError
from stratafl.security.tokens import read_claims_unverified

__all__ = ["MIN_RENEW_SECONDS", "renewal_due", "seconds_to_renewal"]

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
