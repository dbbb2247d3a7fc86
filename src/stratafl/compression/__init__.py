"""Update compression: the codecs a session may choose for its clients' updates.

Low in the layers (numpy, `stratafl.params` and the errors only): the client encodes with
it, the combiner's staging decodes with it before any aggregation rule sees an update, and
the rules never know an update was compressed. Partial updates (`compression.partial`:
which tensors an update carries) are negotiated the same way, per session.
"""

from stratafl.compression.codecs import decode, encoded_layout
from stratafl.compression.partial import (
    PartialUpdates,
    parse_partial_updates,
    partial_of,
    sent_tensors,
)
from stratafl.compression.spec import NONE, Codec, Compression, check_codec, parse_compression
from stratafl.compression.update import ErrorFeedback, encode_update, update_layout

__all__ = [
    "NONE",
    "Codec",
    "Compression",
    "PartialUpdates",
    "check_codec",
    "ErrorFeedback",
    "decode",
    "encode_update",
    "encoded_layout",
    "parse_compression",
    "parse_partial_updates",
    "partial_of",
    "sent_tensors",
    "update_layout",
]
