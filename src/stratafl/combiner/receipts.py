"""The combiner's check of its clients' receipts, before it folds or relays an answer.

The controller counts a client's outcome only if the client's receipt verifies, and it
rejects a combiner's whole partial if the partial holds an update it cannot count. So the
combiner must not fold an update with a bad receipt: one hostile client would otherwise
make its combiner's partial fail every round. Receipts are Ed25519 signatures
(`stratafl.security.receipts`) and the round's spec carries the selected clients' public
keys, so the combiner checks what only the client and the controller could have made,
without holding the controller's secret.

A spec with no receipt keys at all asks for no check (the controller always sends them;
a bare spec is what combiner-level tests send): receipts are then relayed unchecked and
the controller's check alone decides, as it does for any combiner.
"""

from __future__ import annotations

from collections.abc import Mapping

from stratafl.errors import ConfigError
from stratafl.proto import stratafl_pb2 as pb
from stratafl.security.receipts import KEY_BYTES, Statement, verify_receipt

UPDATE_RECEIPT_FAILS = (
    "the update's receipt does not verify: sign it with the receipt key /assign gave this client"
)
REPORT_RECEIPT_FAILS = (
    "the validation report's receipt does not verify: sign it with the receipt key /assign "
    "gave this client"
)


def check_receipt_keys(spec: pb.RoundSpec) -> None:
    """Raise `ConfigError` unless every key of ``spec.receipt_keys`` is a `KEY_BYTES`
    public key of one of the spec's clients."""
    keys, chosen = spec.receipt_keys, set(spec.client_ids)
    strangers = [client_id for client_id in keys if client_id not in chosen]
    if strangers:
        raise ConfigError(
            f"the round spec has receipt keys for {len(strangers)} clients it does not "
            f"select (e.g. {strangers[0][:128]!r}): send keys only for its client_ids"
        )
    for client_id, key in keys.items():
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"the receipt key of client {client_id[:128]!r} is {len(key)} bytes; a public "
                f"key is {KEY_BYTES}"
            )


def receipt_verifies(
    spec: pb.RoundSpec,
    combiner_id: str,
    client_id: str,
    num_examples: int,
    metrics: Mapping[str, float],
    receipt: bytes,
) -> bool:
    """Whether ``receipt`` is ``client_id``'s signature of what it reports on this round
    to ``combiner_id`` (the statement the controller will verify too); True when the spec
    carries no keys, false for a client it has no key of."""
    if not spec.receipt_keys:
        return True
    key = spec.receipt_keys.get(client_id)
    if key is None:
        return False
    kind = "train" if spec.kind == pb.TRAIN else "validate"
    statement = Statement(spec.round_id, kind, client_id, combiner_id, num_examples, metrics)
    return verify_receipt(key, statement, receipt)
