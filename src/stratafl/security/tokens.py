"""Signed bearer tokens: who a caller is, checkable by anyone holding the public key.

The controller signs; combiners, the REST API and the CLI only verify, so a combiner
admits a client without asking the controller, and a leaked public key grants nothing.
Ed25519 (`cryptography`): small keys and signatures, no parameters to get wrong.

Format: ``st1.<base64url(JSON claims)>.<base64url(signature over "st1.<payload>")>``,
unpadded. A sender may be hostile, so `TokenVerifier.verify` bounds the length before
parsing, checks the signature before reading the JSON, then demands exactly the expected
fields and types. Every failure is an `AuthError` that never contains the token.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stratafl.errors import AuthError, ConfigError
from stratafl.security.files import create_private, read_pem
from stratafl.security.roles import Role

__all__ = ["MAX_TOKEN_CHARS", "Claims", "TokenSigner", "TokenVerifier", "read_claims_unverified"]

VERSION = "st1"
MAX_TOKEN_CHARS = 4096
"""Longer tokens are refused unread; ours are about 250 characters."""
MAX_SUBJECT_CHARS = 256
MAX_TIMESTAMP = 1e11  # the year 5138: far beyond any real expiry, and still a valid datetime
SIGNATURE_BYTES = 64
NEW_TOKEN = "ask the federation's admin for a new one: strata token create"
AS_PRINTED = "pass the token exactly as `strata token create` printed it"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_FIELDS = frozenset({"token_id", "subject", "role", "issued_at", "expires_at", "max_examples"})
_ROLES = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its holder."""

    token_id: str
    """Random and unique; what revocation names."""
    subject: str
    """The identity: a client id, a combiner id, a person's name, ``"controller"``."""
    role: Role
    issued_at: float
    """Unix seconds."""
    expires_at: float
    max_examples: int | None = None
    """A client's enrolment cap on the ``num_examples`` it may claim for an update."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url ``text``, or None for anything else."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # checked: cannot fail
    return data if _b64encode(data) == text else None  # one encoding per token, no aliases


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _valid_subject(subject: object) -> bool:
    return (
        isinstance(subject, str) and 0 < len(subject) <= MAX_SUBJECT_CHARS and subject.isprintable()
    )


def _timestamp(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):  # true is an int
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number < MAX_TIMESTAMP else None


def _encode_claims(claims: Claims) -> str:
    body = json.dumps(asdict(claims), separators=(",", ":"), sort_keys=True)  # role: a str
    return _b64encode(body.encode("utf-8"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):  # JSON lets a later field shadow an earlier one; we do not
        raise ValueError("duplicate field")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _malformed(field: str) -> AuthError:
    return AuthError(f"token claims are malformed ({field}); {NEW_TOKEN}")


def _decode_claims(payload: bytes) -> Claims:
    """Claims from a signed payload, refusing any field, type or value we did not issue."""
    try:
        data = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _malformed("not a JSON object") from exc
    if not isinstance(data, dict) or data.keys() != _FIELDS:
        raise _malformed("unexpected fields")
    token_id, subject = data["token_id"], data["subject"]
    if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
        raise _malformed("token_id")
    if not _valid_subject(subject):
        raise _malformed("subject")
    if not isinstance(data["role"], str) or data["role"] not in _ROLES:
        raise _malformed("role")
    issued_at, expires_at = _timestamp(data["issued_at"]), _timestamp(data["expires_at"])
    if issued_at is None or expires_at is None or expires_at <= issued_at:
        raise _malformed("issued_at, expires_at")
    max_examples = data["max_examples"]
    if max_examples is not None and (type(max_examples) is not int or max_examples < 1):
        raise _malformed("max_examples")
    return Claims(token_id, subject, Role(data["role"]), issued_at, expires_at, max_examples)


class TokenVerifier:
    """Checks tokens against the controller's public key, a revocation list and a clock.

    Holds no secret, so any process may have one. The revoked set is replaced whole by
    `set_revoked` (one reference swap), so an asyncio task refreshing it from the
    controller never leaves `verify` looking at a half-built set.
    """

    def __init__(
        self,
        public_key_pem: bytes,
        *,
        revoked: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        leeway_seconds: float = 30.0,
    ) -> None:
        try:
            key = serialization.load_pem_public_key(public_key_pem)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                "the token public key is not a PEM public key; copy the controller's token "
                "public key again"
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(
                f"the token public key is {type(key).__name__}, not Ed25519; copy the "
                "controller's token public key again"
            )
        if not (math.isfinite(leeway_seconds) and leeway_seconds >= 0):
            raise ConfigError(f"leeway_seconds must be >= 0, got {leeway_seconds}")
        self._key = key
        self._clock = clock
        self._leeway = float(leeway_seconds)
        self._revoked: frozenset[str] = frozenset(revoked)

    def set_revoked(self, token_ids: Iterable[str]) -> None:
        """Replace the set of revoked token ids."""
        self._revoked = frozenset(token_ids)

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; `AuthError` for anything else."""
        if not isinstance(token, str):
            raise AuthError(f"a token must be text, got {type(token).__name__}")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"token is longer than {MAX_TOKEN_CHARS} characters; {AS_PRINTED}")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise AuthError(f"malformed token: not {VERSION}.<claims>.<signature>; {AS_PRINTED}")
        payload, signature = _b64decode(parts[1]), _b64decode(parts[2])
        if payload is None or signature is None or len(signature) != SIGNATURE_BYTES:
            raise AuthError(f"malformed token: its parts are not base64url; {AS_PRINTED}")
        try:
            self._key.verify(signature, f"{VERSION}.{parts[1]}".encode("ascii"))
        except InvalidSignature as exc:
            raise AuthError(
                "token signature does not verify: it was altered, or issued by another "
                f"federation's controller; {NEW_TOKEN}"
            ) from exc
        claims = _decode_claims(payload)
        if claims.token_id in self._revoked:
            raise AuthError(f"token {claims.token_id} was revoked; {NEW_TOKEN}")
        now = self._clock()
        if now > claims.expires_at + self._leeway:
            raise AuthError(f"token expired at {_iso(claims.expires_at)}; {NEW_TOKEN}")
        if now < claims.issued_at - self._leeway:
            raise AuthError(
                f"token is issued at {_iso(claims.issued_at)}, in this machine's future; "
                "check the clocks of this machine and the controller's"
            )
        return claims


class TokenSigner:
    """The controller's token-signing key. Only the controller should hold one."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key

    @classmethod
    def generate(cls) -> TokenSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> TokenSigner:
        """The key in the PEM file ``path``, created (mode 0600) if there is none yet.

        A restarted controller must find the same key, or every token it issued stops
        verifying; so an unreadable or foreign file is an error, never replaced.
        """
        if not path.exists():
            signer = cls.generate()
            pem = signer._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            if create_private(path, pem):
                return signer
        data = read_pem(path, "the token-signing key")
        fix = "restore it, or move it away to create a new key (tokens issued so far will fail)"
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{path} is not an unencrypted PEM private key; {fix}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} holds a {type(key).__name__}, not Ed25519; {fix}")
        return cls(key)

    @property
    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verifier(self) -> TokenVerifier:
        """A verifier of this signer's tokens (no revocations, the system clock)."""
        return TokenVerifier(self.public_key_pem)

    def issue(
        self,
        subject: str,
        role: Role,
        ttl_seconds: float,
        *,
        max_examples: int | None = None,
        now: float | None = None,
    ) -> tuple[str, Claims]:
        """A new token and its claims. Keep the claims (the store does); hand out the token."""
        if not _valid_subject(subject):
            raise ConfigError(
                f"subject {subject!r} must be 1 to {MAX_SUBJECT_CHARS} printable characters"
            )
        if role not in _ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(sorted(_ROLES))}")
        if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
            raise ConfigError(f"ttl_seconds must be a positive number, got {ttl_seconds}")
        if max_examples is not None and (type(max_examples) is not int or max_examples < 1):
            raise ConfigError(f"max_examples must be a positive integer, got {max_examples!r}")
        issued_at = float(time.time() if now is None else now)
        expires_at = issued_at + float(ttl_seconds)
        if _timestamp(issued_at) is None or _timestamp(expires_at) is None:
            raise ConfigError(f"now={now} and ttl_seconds={ttl_seconds} leave 1970 to 5000 AD")
        token_id = secrets.token_urlsafe(16)  # 128 random bits
        claims = Claims(token_id, subject, Role(role), issued_at, expires_at, max_examples)
        signed = f"{VERSION}.{_encode_claims(claims)}"
        signature = self._key.sign(signed.encode("ascii"))
        return f"{signed}.{_b64encode(signature)}", claims


def read_claims_unverified(token: str) -> Claims:
    """What a token says, unchecked: for its holder, who needs its own name (a client's id
    is its token's subject). Never use it to admit a caller."""
    parts = token.strip().split(".") if isinstance(token, str) else []
    payload = _b64decode(parts[1]) if len(parts) == 3 and parts[0] == VERSION else None
    if payload is None or len(token) > MAX_TOKEN_CHARS:
        raise AuthError(f"malformed token: not {VERSION}.<claims>.<signature>; {AS_PRINTED}")
    return _decode_claims(payload)
