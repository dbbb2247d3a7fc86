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

import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stratafl.errors import AuthError, ConfigError
from stratafl.security.claims import (
    CONTROLLER_AUDIENCE,
    MAX_SUBJECT_CHARS,
    NEW_TOKEN,
    ROLES,
    Claims,
    b64decode,
    b64encode,
    decode_claims,
    encode_claims,
    iso,
    timestamp,
    valid_host,
    valid_subject,
)
from stratafl.security.files import create_private, read_pem
from stratafl.security.roles import Role

__all__ = [
    "LEEWAY_SECONDS",
    "MAX_TOKEN_CHARS",
    "SIGNATURE_BYTES",
    "Claims",
    "TokenSigner",
    "TokenVerifier",
    "read_claims_unverified",
]

VERSION = "st1"
MAX_TOKEN_CHARS = 4096
"""Longer tokens are refused unread; ours are about 350 characters (400 with hosts)."""
MAX_VERIFIED_TOKENS = 32_768
"""Verified tokens a verifier remembers (about 1 kB each): a combiner's clients and more."""
SIGNATURE_BYTES = 64
LEEWAY_SECONDS = 5.0
"""How far two machines' clocks may disagree: an expired token is accepted this long (and
one issued this far in the future), enough for NTP-synchronised hosts and no more."""
AS_PRINTED = "pass the token exactly as `strata token create` printed it"


def load_public_key(pem: bytes, what: str, fix: str) -> Ed25519PublicKey:
    """The controller's Ed25519 public key from ``pem`` (tokens and round grants verify
    with it); a `ConfigError` that names ``what`` it is and the ``fix``."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{what} is not a PEM public key; {fix}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{what} is {type(key).__name__}, not Ed25519; {fix}")
    return key


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
        leeway_seconds: float = LEEWAY_SECONDS,
    ) -> None:
        key = load_public_key(
            public_key_pem,
            "the token public key",
            "copy the controller's token public key again",
        )
        if not (math.isfinite(leeway_seconds) and leeway_seconds >= 0):
            raise ConfigError(f"leeway_seconds must be >= 0, got {leeway_seconds}")
        self._key = key
        self._clock = clock
        self._leeway = float(leeway_seconds)
        self._revoked: frozenset[str] = frozenset(revoked)
        self._verified: OrderedDict[str, Claims] = OrderedDict()
        """Tokens whose signature verified, newest last: a combiner sees each of its
        clients' tokens on every call, and a signature check costs ~0.5 ms (the same bytes
        verify the same way, so revocation and expiry are what is checked again)."""

    def set_revoked(self, token_ids: Iterable[str]) -> None:
        """Replace the set of revoked token ids."""
        self._revoked = frozenset(token_ids)

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; `AuthError` for anything else."""
        if not isinstance(token, str):
            raise AuthError(f"a token must be text, got {type(token).__name__}")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"token is longer than {MAX_TOKEN_CHARS} characters; {AS_PRINTED}")
        claims = self._verified.get(token)
        if claims is None:
            claims = self._check_signature(token)
            self._verified[token] = claims
            if len(self._verified) > MAX_VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        if claims.token_id in self._revoked:
            raise AuthError(f"token {claims.token_id} was revoked; {NEW_TOKEN}")
        now = self._clock()
        if now > claims.expires_at + self._leeway:
            raise AuthError(f"token expired at {iso(claims.expires_at)}; {NEW_TOKEN}")
        if now < claims.issued_at - self._leeway:
            raise AuthError(
                f"token is issued at {iso(claims.issued_at)}, in this machine's future; "
                "check the clocks of this machine and the controller's"
            )
        return claims

    def _check_signature(self, token: str) -> Claims:
        """The claims of a token whose signature verifies (nothing else checked)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise AuthError(f"malformed token: not {VERSION}.<claims>.<signature>; {AS_PRINTED}")
        payload, signature = b64decode(parts[1]), b64decode(parts[2])
        if payload is None or signature is None or len(signature) != SIGNATURE_BYTES:
            raise AuthError(f"malformed token: its parts are not base64url; {AS_PRINTED}")
        try:
            self._key.verify(signature, f"{VERSION}.{parts[1]}".encode("ascii"))
        except InvalidSignature as exc:
            raise AuthError(
                "token signature does not verify: it was altered, or issued by another "
                f"federation's controller; {NEW_TOKEN}"
            ) from exc
        return decode_claims(payload)


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

    def sign_document(self, domain: bytes, document: bytes) -> bytes:
        """A signature over ``domain + document``, for what the controller signs besides
        tokens (`security.grants`). The domain (ending in a NUL byte, never a token's
        version prefix) keeps a document's signature from ever verifying as a token's."""
        if not domain.endswith(b"\0") or domain.startswith(f"{VERSION}.".encode()):
            raise ConfigError("a signing domain ends in a NUL byte and is not a token's prefix")
        return self._key.sign(domain + document)

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
        audience: str = CONTROLLER_AUDIENCE,
        hosts: Sequence[str] = (),
        token_id: str | None = None,
    ) -> tuple[str, Claims]:
        """A new token and its claims. Keep the claims (the store does); hand out the token.

        ``token_id`` is new and random unless given: a renewed token and a client's ticket
        keep their parent's id, so revoking the parent revokes them too."""
        if not valid_subject(subject):
            raise ConfigError(
                f"subject {subject!r} must be 1 to {MAX_SUBJECT_CHARS} printable characters"
            )
        if role not in ROLES:
            raise ConfigError(f"role {role!r} is not one of {', '.join(sorted(ROLES))}")
        if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
            raise ConfigError(f"ttl_seconds must be a positive number, got {ttl_seconds}")
        if max_examples is not None and (type(max_examples) is not int or max_examples < 1):
            raise ConfigError(f"max_examples must be a positive integer, got {max_examples!r}")
        if not valid_subject(audience):
            raise ConfigError(f"audience {audience!r} must be a controller's or combiner's id")
        if isinstance(hosts, str) or not all(valid_host(host) for host in hosts):
            raise ConfigError(f"hosts must be a list of names or addresses, got {hosts!r}")
        issued_at = float(time.time() if now is None else now)
        expires_at = issued_at + float(ttl_seconds)
        if timestamp(issued_at) is None or timestamp(expires_at) is None:
            raise ConfigError(f"now={now} and ttl_seconds={ttl_seconds} leave 1970 to 5000 AD")
        if token_id is None:
            token_id = secrets.token_urlsafe(16)  # 128 random bits
        claims = Claims(
            token_id,
            subject,
            Role(role),
            issued_at,
            expires_at,
            max_examples,
            audience=audience,
            hosts=tuple(hosts),
        )
        signed = f"{VERSION}.{encode_claims(claims)}"
        signature = self._key.sign(signed.encode("ascii"))
        return f"{signed}.{b64encode(signature)}", claims


def read_claims_unverified(token: str) -> Claims:
    """What a token says, unchecked: for its holder, who needs its own name (a client's id
    is its token's subject). Never use it to admit a caller."""
    parts = token.strip().split(".") if isinstance(token, str) else []
    payload = b64decode(parts[1]) if len(parts) == 3 and parts[0] == VERSION else None
    if payload is None or len(token) > MAX_TOKEN_CHARS:
        raise AuthError(f"malformed token: not {VERSION}.<claims>.<signature>; {AS_PRINTED}")
    return decode_claims(payload)
