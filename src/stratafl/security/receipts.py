"""Receipts: a client's signed word on what it did in a round, which its combiner relays.

A combiner reports each client's outcome to the controller, and a hostile combiner could
invent a client, an example count or a score. So each client signs what it reports with a
key only it and the controller hold, and the controller counts an outcome only if its
receipt verifies: a combiner can drop or relay a receipt, never make one.

- The key of a client is derived (HKDF-SHA256) from one controller secret and the client's
  id, so the controller stores no key per client and a key names one client only. The
  controller hands it to the client with its assignment (``POST /assign``).
- A receipt is HMAC-SHA256 over an unambiguous encoding of (round id, task kind, client,
  combiner, example count, metrics by name): every field is length-prefixed or of fixed
  size, so no two different tuples encode to the same bytes.

No transport here: the client signs, the controller verifies, both with these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from stratafl.errors import ConfigError
from stratafl.security.claims import b64decode, b64encode
from stratafl.security.files import create_private

__all__ = [
    "KEY_BYTES",
    "RECEIPT_BYTES",
    "ReceiptKeys",
    "Statement",
    "decode_key",
    "encode_key",
    "make_receipt",
    "verify_receipt",
]

KEY_BYTES = 32
SECRET_BYTES = 32
RECEIPT_BYTES = 32
_DOMAIN = b"stratafl receipt v1"
_KEY_INFO = b"stratafl receipt key v1\x00"
KINDS = ("train", "validate")
MAX_CACHED_KEYS = 100_000
"""Derived keys kept (about 100 bytes each); deriving one again costs microseconds."""


@dataclass(frozen=True)
class Statement:
    """What a receipt vouches for: a client's own account of one task in one round."""

    round_id: str
    kind: str
    """``train`` or ``validate``."""
    client_id: str
    combiner_id: str
    num_examples: int
    metrics: Mapping[str, float]

    def encode(self) -> bytes:
        """The canonical bytes: each text length-prefixed, numbers in fixed width, the
        metrics sorted by name. Raises `ValueError` for a kind or count out of range."""
        if self.kind not in KINDS:
            raise ValueError(f"a receipt's kind is one of {KINDS}, got {self.kind!r}")
        if not 0 <= self.num_examples < 1 << 63:
            raise ValueError(f"num_examples {self.num_examples} is out of range 0..2**63-1")
        parts = [_DOMAIN]
        for text in (self.round_id, self.kind, self.client_id, self.combiner_id):
            parts.append(_text(text))
        parts.append(struct.pack(">Q", self.num_examples))
        parts.append(struct.pack(">I", len(self.metrics)))
        for name in sorted(self.metrics):
            parts.append(_text(name))
            parts.append(struct.pack(">d", float(self.metrics[name])))
        return b"".join(parts)


def _text(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data


def make_receipt(key: bytes, statement: Statement) -> bytes:
    """The receipt for ``statement`` under a client's ``key``."""
    return hmac.new(key, statement.encode(), hashlib.sha256).digest()


def verify_receipt(key: bytes, statement: Statement, receipt: bytes) -> bool:
    """Whether ``receipt`` is ``key``'s receipt for exactly ``statement`` (compared in
    constant time); a statement that cannot be encoded verifies nothing."""
    if len(receipt) != RECEIPT_BYTES:
        return False
    try:
        expected = make_receipt(key, statement)
    except ValueError:
        return False
    return hmac.compare_digest(expected, receipt)


def encode_key(key: bytes) -> str:
    """A key as the assignment carries it (base64url, unpadded)."""
    return b64encode(key)


def decode_key(text: str) -> bytes | None:
    """A key from its base64url text; None unless it decodes to `KEY_BYTES` bytes."""
    key = b64decode(text) if text else None
    return key if key is not None and len(key) == KEY_BYTES else None


class ReceiptKeys:
    """The controller's side: every client's receipt key, derived from one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ConfigError(f"a receipt secret is {SECRET_BYTES} bytes, got {len(secret)}")
        self._secret = secret
        self._keys: dict[str, bytes] = {}

    @classmethod
    def generate(cls) -> ReceiptKeys:
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def load_or_create(cls, path: Path) -> ReceiptKeys:
        """The secret in ``path``, created (mode 0600) at the first start. A restarted
        controller must find the same secret, or its clients' keys stop verifying until
        they are assigned again; so a file of the wrong size is an error, never replaced."""
        if not path.exists():
            keys = cls.generate()
            if create_private(path, keys._secret):
                return keys
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the receipt secret {path}: {exc}") from exc
        if len(data) != SECRET_BYTES:
            raise ConfigError(
                f"{path} holds {len(data)} bytes, not a {SECRET_BYTES}-byte receipt secret; "
                "restore it, or move it away to create a new one"
            )
        return cls(data)

    def key_for(self, client_id: str) -> bytes:
        """``client_id``'s key (HKDF-SHA256 of the secret, the info naming the client)."""
        key = self._keys.get(client_id)
        if key is None:
            info = _KEY_INFO + client_id.encode("utf-8", "surrogatepass")
            hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
            key = hkdf.derive(self._secret)
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            self._keys[client_id] = key
        return key

    def verify(self, statement: Statement, receipt: bytes) -> bool:
        """Whether ``receipt`` is the receipt of ``statement.client_id`` for it."""
        return verify_receipt(self.key_for(statement.client_id), statement, receipt)
