"""The tokens the controller issued: what an admin lists and revokes.

Only claims are stored, never a token: the signature is what makes a token a credential,
so a copy of this table grants nothing. Revocation is a timestamp on the row; verifiers
(combiners, the REST API) fetch `revoked_token_ids` and refuse those tokens.

These methods are part of `StateStore` (it inherits them from `TokenTable`); they live
here to keep the token schema's reads and writes in one module of their own.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from stratafl.errors import AuthError, ConfigError, NotFoundError
from stratafl.records import TokenRecord
from stratafl.security.tokens import Claims
from stratafl.store.ids import row_by_id
from stratafl.store.tables import TokenRow

__all__ = ["REVOCATION_GRACE_SECONDS", "TokenTable"]

MAX_NAME_CHARS = 256
REVOCATION_GRACE_SECONDS = 300.0
"""How long a revoked token stays on the revocation list after it expires: verifiers
accept a token for a short leeway past its expiry (a few seconds) and their clocks may
be a little ahead of ours, so it must stay listed until no verifier would take it."""


class TokenTable:
    """Reads and writes of the ``tokens`` table, mixed into `StateStore`."""

    def _session(self) -> Session:  # StateStore's own opens a session on its engine
        raise NotImplementedError

    def add_token(self, claims: Claims, name: str) -> TokenRecord:
        """Record a token just issued, under a human label (e.g. ``hospital-3``)."""
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise ConfigError(f"token name must be text of at most {MAX_NAME_CHARS} characters")
        row = TokenRow(
            token_id=claims.token_id,
            name=name,
            subject=claims.subject,
            role=claims.role.value,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            max_examples=claims.max_examples,
            revoked_at=None,
        )
        with self._session() as db, db.begin():
            if db.get(TokenRow, claims.token_id) is not None:
                raise ConfigError(
                    f"token {claims.token_id} is already recorded; issue a new token instead"
                )
            db.add(row)
        return TokenRecord.model_validate(row)

    def tokens(self) -> list[TokenRecord]:
        """Every token issued, oldest first, revoked and expired ones included."""
        query = select(TokenRow).order_by(TokenRow.issued_at, TokenRow.token_id)
        with self._session() as db:
            return [TokenRecord.model_validate(row) for row in db.scalars(query)]

    def token(self, token_id: str) -> TokenRecord:
        with self._session() as db:
            return TokenRecord.model_validate(self._token_row(db, token_id))

    def revoke_token(self, token_id: str) -> TokenRecord:
        """Revoke a token; revoking it again changes nothing (the first time is kept)."""
        with self._session() as db, db.begin():
            row = self._token_row(db, token_id)
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return TokenRecord.model_validate(row)

    def extend_token(self, token_id: str, expires_at: float) -> TokenRecord:
        """Move an unrevoked token's expiry to ``expires_at`` (a renewal keeps the token's
        id, so the revocation list still names it until its last copy expires)."""
        with self._session() as db, db.begin():
            row = self._token_row(db, token_id)
            if row.revoked_at is not None:
                raise AuthError(f"token {token_id} was revoked; ask the admin for a new one")
            row.expires_at = max(row.expires_at, expires_at)
            return TokenRecord.model_validate(row)

    def live_admin_tokens(self, *, now: float | None = None) -> list[str]:
        """Ids of the admin tokens neither revoked nor expired: who can still run things."""
        query = select(TokenRow.token_id).where(
            TokenRow.role == "admin",
            TokenRow.revoked_at.is_(None),
            TokenRow.expires_at > (time.time() if now is None else now),
        )
        with self._session() as db:
            return list(db.scalars(query))

    def revoked_token_ids(
        self, *, now: float | None = None, grace_seconds: float = REVOCATION_GRACE_SECONDS
    ) -> list[str]:
        """Ids of revoked tokens still worth refusing: those not yet expired (by more than
        ``grace_seconds``; an expired token is refused anyway), sorted."""
        cutoff = (time.time() if now is None else now) - grace_seconds
        query = (
            select(TokenRow.token_id)
            .where(TokenRow.revoked_at.is_not(None), TokenRow.expires_at > cutoff)
            .order_by(TokenRow.token_id)
        )
        with self._session() as db:
            return list(db.scalars(query))

    @staticmethod
    def _token_row(db: Session, token_id: str) -> TokenRow:
        if len(token_id) > 64 or "." in token_id:  # maybe a whole token: never echo one
            raise NotFoundError(
                "that is not a token id (pass the id, not the token); list the tokens with "
                "`strata token list`"
            )
        return row_by_id(
            db,
            TokenRow,
            TokenRow.token_id,
            token_id,
            what="token",
            missing=f"token {token_id!r} was never issued here; list the tokens with "
            "`strata token list`",
        )
