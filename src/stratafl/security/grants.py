"""Round grants: the controller's signed word that a combiner runs this round.

A combiner pushes tasks to its clients; without a grant, a hostile combiner could make
them train on any model at any time (outside the controller's rounds) and keep what they
send. So the controller signs, for each RunRound it sends, a grant naming the round
(session, number, attempt id, kind, model) and the one combiner it is for, with an expiry;
the combiner passes it on in every task, and a secured client does a task only if its
grant verifies under the controller's token key and names the combiner it was assigned.

The grant is signed with the token-signing key, under a prefix of its own (domain
separation): a grant's signature can never pass as a token's, nor a token's as a grant's.
Wire format: the 64-byte Ed25519 signature, then the grant as canonical JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidSignature

from stratafl.errors import AuthError
from stratafl.security.tokens import SIGNATURE_BYTES, TokenSigner, load_public_key

__all__ = ["GRANT_DOMAIN", "Grant", "GrantVerifier", "sign_grant"]

GRANT_DOMAIN = b"stratafl round grant v1\0"
"""What every grant's signed message starts with; a token's starts with ``st1.``."""
MAX_GRANT_BYTES = 4096
LEEWAY_SECONDS = 10.0
"""How far the client's clock may be behind the controller's when it checks an expiry."""


@dataclass(frozen=True)
class Grant:
    """Round ``round`` (attempt ``round_id``) of ``session_id``, of ``kind`` (the wire's
    task kind) on ``model_id``, run by ``combiner_id``, until ``expires_at`` (Unix time)."""

    session_id: str
    round: int
    round_id: str
    kind: int
    model_id: str
    combiner_id: str
    expires_at: float

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, payload: bytes) -> Grant:
        """The grant in ``payload``; `AuthError` unless it has exactly the fields, typed."""
        try:
            data = json.loads(payload)
            grant = cls(**data)
        except (ValueError, TypeError) as exc:
            raise AuthError("malformed round grant: not the controller's grant") from exc
        texts = (grant.session_id, grant.round_id, grant.model_id, grant.combiner_id)
        numbers_ok = (
            type(grant.round) is int
            and type(grant.kind) is int
            and isinstance(grant.expires_at, int | float)
            and math.isfinite(grant.expires_at)
        )
        if not (numbers_ok and all(isinstance(t, str) for t in texts)):
            raise AuthError("malformed round grant: a field has the wrong type")
        return grant


def sign_grant(signer: TokenSigner, grant: Grant) -> bytes:
    """``grant`` signed by the controller's token key, as `Task.grant` carries it."""
    payload = grant.payload()
    return signer.sign_document(GRANT_DOMAIN, payload) + payload


class GrantVerifier:
    """Checks grants against the controller's token public key and a clock."""

    def __init__(self, public_key_pem: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = load_public_key(
            public_key_pem,
            "the controller's token public key",
            "ask the controller's /discovery again",
        )
        self._clock = clock

    def verify(self, blob: bytes, combiner_id: str) -> Grant:
        """The grant in ``blob`` if the controller signed it for ``combiner_id`` and it has
        not expired; `AuthError` naming what is wrong otherwise."""
        if not blob:
            raise AuthError("the task carries no round grant of the controller")
        if len(blob) > MAX_GRANT_BYTES or len(blob) <= SIGNATURE_BYTES:
            raise AuthError("malformed round grant: wrong size")
        signature, payload = blob[:SIGNATURE_BYTES], blob[SIGNATURE_BYTES:]
        try:
            self._key.verify(signature, GRANT_DOMAIN + payload)
        except InvalidSignature as exc:
            raise AuthError(
                "the round grant does not verify: the controller did not sign it"
            ) from exc
        grant = Grant.parse(payload)
        if grant.combiner_id != combiner_id:
            raise AuthError(
                f"the round grant is for combiner {grant.combiner_id!r}, not {combiner_id!r}"
            )
        if self._clock() > grant.expires_at + LEEWAY_SECONDS:
            raise AuthError("the round grant expired: its round is over")
        return grant
