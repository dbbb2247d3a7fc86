"""Receipts: a client's signed word on what it did in a round, which its combiner relays.

A combiner reports each client's outcome to the controller, and a hostile combiner could
invent a client, an example count or a score. So each client signs what it reports with a
private key only it (and the controller, which derives it) holds, and the controller counts
an outcome only if its receipt verifies: a combiner can drop or relay a receipt, never make
one. A hostile client can sign badly; so its combiner checks the receipt too, with the
client's public key the controller sends in the round's spec, and folds no update whose
receipt fails (else one client could make its combiner's whole partial fail every round).

- A receipt is an Ed25519 signature, not a MAC: the combiner must verify it without being
  able to make one, which a shared MAC key cannot give.
- The private key of a client is an Ed25519 seed derived (HKDF-SHA256) from one controller
  secret and the client's id, so the controller stores no key per client, derives any
  client's public key on demand, and a key names one client only. The controller hands the
  seed to the client with its assignment (``POST /assign``).
- The signed bytes are an unambiguous encoding of (round id, task kind, client, combiner,
  example count, metrics by name): every field is length-prefixed or of fixed size, so no
  two different tuples encode to the same bytes.

No transport here: the client signs, the combiner and the controller verify, all with these
functions.
"""

from __future__ import annotations

import secrets
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
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
    "public_key_of",
    "verify_receipt",
]

KEY_BYTES = 32
"""An Ed25519 private seed and an Ed25519 public key are both this long."""
SECRET_BYTES = 32
RECEIPT_BYTES = 64
"""An Ed25519 signature."""
_DOMAIN = b"stratafl receipt v2"
_KEY_INFO = b"stratafl receipt ed25519 seed v2\x00"
KINDS = ("train", "validate")
MAX_CACHED_KEYS = 100_000
"""Public keys the controller keeps derived (a few hundred bytes each); deriving one again
costs tens of microseconds (HKDF and a scalar multiplication)."""
CACHED_VERIFIERS = 4096
"""Parsed public keys a combiner keeps: at least a round's clients on one combiner."""


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


def make_receipt(seed: bytes, statement: Statement) -> bytes:
    """The receipt for ``statement`` under a client's private ``seed`` (its Ed25519
    signature of the statement's encoding). Raises `ValueError` for a statement that
    cannot be encoded or a seed that is not `KEY_BYTES` long."""
    return _private_key(seed).sign(statement.encode())


def public_key_of(seed: bytes) -> bytes:
    """The raw public key (`KEY_BYTES`) that verifies receipts made with ``seed``."""
    return _private_key(seed).public_key().public_bytes_raw()


def verify_receipt(public_key: bytes, statement: Statement, receipt: bytes) -> bool:
    """Whether ``receipt`` is the signature of exactly ``statement`` by the private key
    of ``public_key``; a malformed key or receipt, or a statement that cannot be encoded,
    verifies nothing."""
    if len(receipt) != RECEIPT_BYTES or len(public_key) != KEY_BYTES:
        return False
    try:
        _verifier(public_key).verify(receipt, statement.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


@lru_cache(maxsize=64)
def _private_key(seed: bytes) -> Ed25519PrivateKey:
    """A client signs every update with one seed: parse (and expand) it once."""
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a receipt key is {KEY_BYTES} bytes, got {len(seed)}")
    return Ed25519PrivateKey.from_private_bytes(seed)


@lru_cache(maxsize=CACHED_VERIFIERS)
def _verifier(public_key: bytes) -> Ed25519PublicKey:
    """Raises `ValueError` for bytes that are no Ed25519 public key."""
    return Ed25519PublicKey.from_public_bytes(public_key)


def encode_key(key: bytes) -> str:
    """A private seed as the assignment carries it (base64url, unpadded)."""
    return b64encode(key)


def decode_key(text: str) -> bytes | None:
    """A private seed from its base64url text; None unless it decodes to `KEY_BYTES`
    bytes."""
    key = b64decode(text) if text else None
    return key if key is not None and len(key) == KEY_BYTES else None


class ReceiptKeys:
    """The controller's side: every client's receipt key pair, derived from one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ConfigError(f"a receipt secret is {SECRET_BYTES} bytes, got {len(secret)}")
        self._secret = secret
        self._public: OrderedDict[str, bytes] = OrderedDict()
        """Least recently used last out: a round verifies one receipt per outcome."""

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
        """``client_id``'s private seed (HKDF-SHA256 of the secret, the info naming the
        client): only the client, by its assignment, gets it."""
        info = _KEY_INFO + client_id.encode("utf-8", "surrogatepass")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info)
        return hkdf.derive(self._secret)

    def public_key_for(self, client_id: str) -> bytes:
        """``client_id``'s raw public key: what verifies its receipts, fit for anyone."""
        key = self._public.get(client_id)
        if key is None:
            key = public_key_of(self.key_for(client_id))
            if len(self._public) >= MAX_CACHED_KEYS:
                self._public.popitem(last=False)
            self._public[client_id] = key
        else:
            self._public.move_to_end(client_id)
        return key

    def public_keys(self, client_ids: Iterable[str]) -> dict[str, bytes]:
        """The public keys of ``client_ids``, by id (what a round's spec carries)."""
        return {client_id: self.public_key_for(client_id) for client_id in client_ids}

    def verify(self, statement: Statement, receipt: bytes) -> bool:
        """Whether ``receipt`` is the receipt of ``statement.client_id`` for it."""
        return verify_receipt(self.public_key_for(statement.client_id), statement, receipt)
