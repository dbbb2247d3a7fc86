"""A token's claims and their encoding: what a token says, and the strict reading of it.

`decode_claims` reads only signed payloads (`stratafl.security.tokens` checks the signature
first) and still refuses any field, type or value the controller does not issue: unknown
or duplicate fields, non-canonical base64, NaN, out-of-range times, unknown roles.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from stratafl.errors import AuthError
from stratafl.security.roles import Role

__all__ = [
    "CONTROLLER_AUDIENCE",
    "MAX_SUBJECT_CHARS",
    "NEW_TOKEN",
    "ROLES",
    "Claims",
    "b64decode",
    "b64encode",
    "decode_claims",
    "encode_claims",
    "iso",
    "timestamp",
    "valid_host",
    "valid_subject",
]

MAX_SUBJECT_CHARS = 256
MAX_TIMESTAMP = 1e11  # the year 5138: far beyond any real expiry, and still a valid datetime
NEW_TOKEN = "ask the federation's admin for a new one: strata token create"
ROLES = frozenset(role.value for role in Role)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_FIELDS = frozenset({"token_id", "subject", "role", "issued_at", "expires_at", "max_examples"})
_OPTIONAL = frozenset({"audience", "hosts"})
"""Fields added after the first release: a token issued before them lacks them and reads
as a token for the controller with no certificate hosts (`Claims`' defaults)."""
CONTROLLER_AUDIENCE = "controller"
MAX_HOSTS = 100
MAX_HOST_CHARS = 253


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
    audience: str = CONTROLLER_AUDIENCE
    """Who accepts it: ``"controller"`` (every token an admin issues), or a combiner's id
    (a client's ticket from ``/assign``, accepted by that combiner alone)."""
    hosts: tuple[str, ...] = ()
    """A combiner token's certificate hosts: the only names and addresses the controller
    signs a certificate for, as the admin listed them when issuing it."""


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url ``text``, or None for anything else."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))  # checked: cannot fail
    return data if b64encode(data) == text else None  # one encoding per token, no aliases


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def valid_subject(subject: object) -> bool:
    return (
        isinstance(subject, str) and 0 < len(subject) <= MAX_SUBJECT_CHARS and subject.isprintable()
    )


def valid_host(host: object) -> bool:
    """A certificate host as a token may carry it (`security.certs` checks its syntax)."""
    return isinstance(host, str) and 0 < len(host) <= MAX_HOST_CHARS and host.isprintable()


def timestamp(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):  # true is an int
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number < MAX_TIMESTAMP else None


def encode_claims(claims: Claims) -> str:
    body = json.dumps(asdict(claims), separators=(",", ":"), sort_keys=True)  # role: a str
    return b64encode(body.encode("utf-8"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):  # JSON lets a later field shadow an earlier one; we do not
        raise ValueError("duplicate field")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _malformed(field: str) -> AuthError:
    return AuthError(f"token claims are malformed ({field}); {NEW_TOKEN}")


def decode_claims(payload: bytes) -> Claims:
    """Claims from a signed payload, refusing any field, type or value we did not issue."""
    try:
        data = json.loads(
            payload.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _malformed("not a JSON object") from exc
    if not isinstance(data, dict) or not _FIELDS <= data.keys() <= _FIELDS | _OPTIONAL:
        raise _malformed("unexpected fields")
    token_id, subject = data["token_id"], data["subject"]
    if not isinstance(token_id, str) or not _TOKEN_ID.fullmatch(token_id):
        raise _malformed("token_id")
    if not valid_subject(subject):
        raise _malformed("subject")
    if not isinstance(data["role"], str) or data["role"] not in ROLES:
        raise _malformed("role")
    issued_at, expires_at = timestamp(data["issued_at"]), timestamp(data["expires_at"])
    if issued_at is None or expires_at is None or expires_at <= issued_at:
        raise _malformed("issued_at, expires_at")
    max_examples = data["max_examples"]
    if max_examples is not None and (type(max_examples) is not int or max_examples < 1):
        raise _malformed("max_examples")
    audience = data.get("audience", CONTROLLER_AUDIENCE)
    if not valid_subject(audience):  # a combiner's id is a token subject
        raise _malformed("audience")
    hosts = data.get("hosts", [])
    if not (isinstance(hosts, list) and len(hosts) <= MAX_HOSTS and all(map(valid_host, hosts))):
        raise _malformed("hosts")
    return Claims(
        token_id,
        subject,
        Role(data["role"]),
        issued_at,
        expires_at,
        max_examples,
        audience=audience,
        hosts=tuple(hosts),
    )
